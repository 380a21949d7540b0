// The punch port's NAT keepalive adapts to a NAT that forgets idle TCP mappings
// after 30 s (conntrack's established timeout, set in the router's namespace):
// the first 30 s gap loses the mapping, the interval halves, and from then on
// the mapping holds, keepalive after keepalive, on the same external endpoint.
// Read from the agent's runtime.json (rewritten every 5 s), as `doctor` does.

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { KeepaliveStatus } from '../../net/holepunch/keepalive.ts'
import { waitForFile } from '../../testkit/harness.ts'
import { LabFleet, type LabRelay, startLabRelay } from '../../testkit/natlab/fleet-lab.ts'
import { canRunLab, createLab, type Lab } from '../../testkit/natlab/lab.ts'

const check = canRunLab()
if (!check.ok) console.warn(`NAT keepalive lab test skipped: ${check.reason}`)

interface HolePunchDetails {
  keepalive?: KeepaliveStatus
  observed?: { address: string; port: number }
}

function holePunchOf(text: string): HolePunchDetails | undefined {
  try {
    return JSON.parse(text).details?.holePunch as HolePunchDetails | undefined
  } catch {
    return undefined
  }
}

describe.skipIf(!check.ok)('NAT keepalive against a 30 s conntrack timeout', () => {
  let lab: Lab
  let relayDir: string
  let relay: LabRelay
  let fleet: LabFleet

  beforeAll(async () => {
    lab = createLab()
    const relayHost = lab.addPublicHost('relay')
    relayDir = await mkdtemp(join(tmpdir(), 'fm-lab-relay-'))
    relay = await startLabRelay(lab, relayHost, relayDir)
    fleet = await LabFleet.create(lab, {
      name: 'ka',
      admin: lab.addPublicHost('admin'),
      coordinator: lab.addPublicHost('coord'),
    })
    await fleet.startCoordinator()
  }, 90_000)

  afterAll(async () => {
    lab?.destroy()
    await Promise.all([fleet?.remove(), relayDir && rm(relayDir, { recursive: true, force: true })])
  })

  it('halves the interval once the mapping is lost, then keeps the mapping', async () => {
    const router = lab.addRouter('short', { behaviour: 'eim' })
    lab.exec(router, 'sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_timeout_established=30'])
    const host = lab.addPrivateHost('dev', router)
    const relayIp = relay.addr.split('/')[2]
    await fleet.enrollAgent(host, 'dev-1', [
      '--observers',
      `${relayIp}:4002,${relayIp}:4003`,
      '--keepalive-max',
      '30s',
    ])
    const runtime = join(fleet.agentState('dev-1'), 'runtime.json')

    // the first 30 s idle gap outlives the NAT's mapping: found lost, interval halved
    await waitForFile(runtime, (t) => (holePunchOf(t)?.keepalive?.lost ?? 0) >= 1, 90_000)
    const adapted = holePunchOf(await readFile(runtime, 'utf8'))
    // the idle time the mapping was lost after, as the agent's clock measured it (timers may
    // fire a millisecond early: 29,999 ms was seen), and an interval of half of it
    const lostAfterMs = adapted?.keepalive?.lostAfterMs ?? 0
    expect(lostAfterMs).toBeGreaterThanOrEqual(29_000)
    expect(adapted?.keepalive).toMatchObject({ intervalMs: Math.floor(lostAfterMs / 2), maxMs: 30_000 })

    // then three keepalives in a row hold the mapping, with nothing lost and the same endpoint
    const heldBefore = adapted?.keepalive?.held ?? 0
    await waitForFile(runtime, (t) => (holePunchOf(t)?.keepalive?.held ?? 0) >= heldBefore + 3, 90_000)
    const after = holePunchOf(await readFile(runtime, 'utf8'))
    expect(after?.keepalive).toMatchObject({
      intervalMs: adapted?.keepalive?.intervalMs,
      lost: adapted?.keepalive?.lost,
    })
    expect(after?.observed).toEqual(adapted?.observed)
  }, 240_000)
})
