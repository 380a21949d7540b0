// What an agent answers `fleetmesh doctor <machine>` with: its runtime snapshot
// as plain, bounded JSON that fits MAX_DIAGNOSIS_BYTES, cut connections first
// (the coordinator's kept), then details, and marked as cut.
import { describe, expect, it } from 'vitest'
import { agentDiagnosis } from '../../agent/diagnosis.ts'
import type { RuntimeSnapshot } from '../../net/index.ts'
import { agentDiagnosisSchema, encodeMessage, MAX_DIAGNOSIS_BYTES } from '../../protocol/index.ts'

const COORDINATOR = '12D3KooWcoordinator'

function snapshot(connections: number): RuntimeSnapshot {
  return {
    role: 'agent',
    pid: 7,
    peerId: '12D3KooWagent',
    at: 1_700_000_000_000,
    listen: ['/ip4/10.0.0.2/tcp/4001'],
    advertised: ['/ip4/10.0.0.2/tcp/4001', `/ip4/198.51.100.9/tcp/4001/p2p/relay/p2p-circuit/p2p/agent`],
    connections: [
      ...Array.from({ length: connections }, (_, i) => ({
        peer: `12D3KooWpeer${i}`,
        remoteAddr: `/ip4/192.0.2.${i % 250}/tcp/${10_000 + i}/p2p/12D3KooWpeer${i}`,
        direction: 'inbound' as const,
        relayed: false,
      })),
      { peer: COORDINATOR, remoteAddr: '/ip4/203.0.113.7/tcp/4001', direction: 'outbound', relayed: false },
    ],
    details: {
      coordinator: { connected: true, path: 'direct' },
      holePunch: { observed: undefined, natKind: 'unknown' },
    },
  }
}

const init = (connections: number, maxBytes?: number) => ({
  machine: 'edge-1',
  snapshot: snapshot(connections),
  coordinator: { peerId: COORDINATOR, addrs: ['/ip4/203.0.113.7/tcp/4001'] },
  interfaces: [{ name: 'eth0', address: '10.0.0.2/255.255.255.0' }],
  ...(maxBytes === undefined ? {} : { maxBytes }),
})

describe('agentDiagnosis', () => {
  it('carries the snapshot as plain JSON, whole when it fits', () => {
    const d = agentDiagnosis(init(3))
    expect(agentDiagnosisSchema.parse(d)).toEqual(d)
    expect(d.truncated).toBe(false)
    expect(d.snapshot.connections).toHaveLength(4)
    expect(d.snapshot.details.holePunch).toEqual({ natKind: 'unknown' })
    expect(d.machine).toBe('edge-1')
  })

  it('leaves connections out to fit, keeping the one to the coordinator', () => {
    const d = agentDiagnosis(init(200, 8 * 1024))
    expect(encodeMessage(agentDiagnosisSchema, d).byteLength).toBeLessThanOrEqual(8 * 1024)
    expect(d.truncated).toBe(true)
    expect(d.snapshot.connections[0]?.peer).toBe(COORDINATOR)
    expect(d.snapshot.details.coordinator).toBeDefined()
  })

  it('stays within MAX_DIAGNOSIS_BYTES with as many connections as a snapshot holds', () => {
    const d = agentDiagnosis(init(1000))
    expect(encodeMessage(agentDiagnosisSchema, d).byteLength).toBeLessThanOrEqual(MAX_DIAGNOSIS_BYTES)
    expect(d.truncated).toBe(true)
  })
})
