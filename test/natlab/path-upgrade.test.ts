// The best path, always, through real NATs: an agent behind an eim NAT reaches
// a coordinator behind another eim NAT through the relay. A firewall on the
// agent's router first makes the punch fail, so the control link runs relayed;
// once the firewall is gone, the hole-punching service tries again when its
// backoff ends (nothing else would: no new relayed connection opens), and the
// control link moves to the punched connection without reconnecting: a
// `path-upgraded` event, no `disconnected`. Every wait is on an event a process
// printed or a file it wrote.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { waitForFile } from '../../testkit/harness.ts'
import { LabFleet, type LabRelay, startLabRelay } from '../../testkit/natlab/fleet-lab.ts'
import { canRunLab, createLab, type Lab, type LabHost } from '../../testkit/natlab/lab.ts'

const check = canRunLab()
if (!check.ok) console.warn(`path upgrade lab test skipped: ${check.reason}`)

/** The hole-punching service's first backoff (60 s), and the punch itself. */
const RETRY_BOUND_MS = 90_000

describe.skipIf(!check.ok)('control link path upgrade through NATs', () => {
  let lab: Lab
  let relayDir: string
  let relay: LabRelay
  let fleet: LabFleet
  let coordHost: LabHost

  beforeAll(async () => {
    lab = createLab()
    const relayHost = lab.addPublicHost('relay')
    coordHost = lab.addPrivateHost('coord', lab.addRouter('cnat', { behaviour: 'eim' }))
    relayDir = await mkdtemp(join(tmpdir(), 'fm-lab-relay-'))
    relay = await startLabRelay(lab, relayHost, relayDir)
    fleet = await LabFleet.create(lab, {
      name: 'up',
      admin: lab.addPublicHost('admin'),
      coordinator: coordHost,
      coordinatorAddrs: [`${relay.addr}/p2p-circuit`],
    })
    await fleet.startRelayedCoordinator(relay, ['--reserve-keepalive', '1s'])
  }, 90_000)

  afterAll(async () => {
    lab?.destroy()
    await Promise.all([fleet?.remove(), relayDir && rm(relayDir, { recursive: true, force: true })])
  })

  it('moves the relayed control link to a direct connection punched later, without reconnecting', async () => {
    const agentRouter = lab.addRouter('anat', { behaviour: 'eim' })
    const agentHost = lab.addPrivateHost('agent', agentRouter)
    const coordinatorPublic = lab.publicAddressOf(coordHost)
    lab.blockForwarding(agentRouter, coordinatorPublic, true)
    const { proc, connected } = await fleet.enrollAgent(agentHost, 'edge-1', [
      '--bootstrap',
      relay.addr,
      '--observers',
      relay.observers,
    ])
    expect(connected.path).toBe('relayed')
    // the first punch failed (either side may have run it): both sides record it
    const failedPunch = (text: string): boolean => {
      try {
        const attempt = JSON.parse(text).details?.holePunch?.attempts?.[fleet.coordinatorPeerId]
        return attempt?.ok === false && attempt.skipped === undefined
      } catch {
        return false
      }
    }
    await waitForFile(join(fleet.agentState('edge-1'), 'runtime.json'), failedPunch, 30_000)
    lab.blockForwarding(agentRouter, coordinatorPublic, false)
    // the failed punch left half-open mappings (SYN_SENT, two minutes) that can fail the very next
    // simultaneous open; the service's doubled backoff would get past them, later than this test waits
    lab.forgetConntrackTo(agentRouter, coordinatorPublic)
    lab.forgetConntrackTo(coordHost.router!, lab.publicAddressOf(agentHost))

    const upgraded = await proc.waitFor('path-upgraded', RETRY_BOUND_MS)
    expect(upgraded).toMatchObject({ from: 'relayed', to: 'direct' })
    expect(String(upgraded.toAddr)).not.toContain('p2p-circuit')
    const direct = await proc.waitFor((e) => e.event === 'connected' && e.path === 'direct', 10_000)
    expect(String(direct.addr)).toBe(upgraded.toAddr)
    expect(proc.events.filter((e) => e.event === 'disconnected')).toEqual([])
    const r = await fleet.deploy('edge-1', 'v1')
    expect(r.stdout).toContain('settled: 1 committed, 0 not')
    const row = (await fleet.machines()).find((m) => m.name === 'edge-1')
    expect(row).toMatchObject({ state: 'committed', online: true, path: 'direct' })
  }, 180_000)
})
