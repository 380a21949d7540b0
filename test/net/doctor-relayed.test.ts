// `fleetmesh doctor --state` on an agent whose coordinator is reached through a
// relay: the circuit address is checked by dialling through it (and timed),
// not marked unsupported. A relay and a coordinator reserved on it, on loopback.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { diagnose } from '../../net/doctor.ts'
import { formatDoctorReport } from '../../net/doctor-format.ts'
import { createHost, type FleetHost } from '../../net/index.ts'

describe('doctor and the relayed path', () => {
  let relay: FleetHost
  let coordinator: FleetHost
  let dir: string

  beforeAll(async () => {
    relay = await createHost({
      role: 'relay',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      privateKey: await generateKeyPair('Ed25519'),
    })
    coordinator = await createHost({
      role: 'coordinator',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      privateKey: await generateKeyPair('Ed25519'),
      reserveOn: [String(relay.getMultiaddrs()[0])],
    })
    dir = await mkdtemp(join(tmpdir(), 'fm-doctor-'))
  })

  afterAll(async () => {
    await coordinator?.stop()
    await relay?.stop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('dials through the circuit to the coordinator and times it', async () => {
    const circuit = `${relay.getMultiaddrs()[0]}/p2p-circuit`
    // a closed port: reported as such, beside the relayed path that works
    const closed = '/ip4/127.0.0.1/tcp/1'
    const enrollment = { coordinator: { peerId: coordinator.peerId.toString(), addrs: [circuit, closed] } }
    await writeFile(join(dir, 'enrollment.json'), JSON.stringify(enrollment))
    const report = await diagnose(dir, [])
    expect(report.coordinator?.reach).toEqual([
      { addr: circuit, result: 'reachable', ms: expect.any(Number) },
      { addr: closed, result: 'refused', ms: expect.any(Number) },
    ])
    expect(formatDoctorReport(report)).toMatch(/p2p-circuit: reachable \(\d+ ms\)/)
  })

  it('names the failure when the coordinator holds no reservation there', async () => {
    const stranger = (await generateKeyPair('Ed25519')).publicKey
    const enrollment = {
      coordinator: {
        peerId: peerIdFromPublicKey(stranger).toString(),
        addrs: [`${relay.getMultiaddrs()[0]}/p2p-circuit`],
      },
    }
    await writeFile(join(dir, 'enrollment.json'), JSON.stringify(enrollment))
    const [reach] = (await diagnose(dir, [])).coordinator?.reach ?? []
    expect(reach?.result).toMatch(/NO_RESERVATION/)
  })
})
