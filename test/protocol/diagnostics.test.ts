// The wire shapes of `fleetmesh ping` and `fleetmesh doctor`: every list and
// string of an agent's diagnosis is bounded, a ping asks for a bounded number of
// probes, and a control frame of a type this version does not know decodes as
// "unknown" (skipped by the readers) while a malformed known one is still an error.
import { describe, expect, it } from 'vitest'
import { encodeCanonical } from '../../keys/index.ts'
import {
  type AgentDiagnosis,
  adminOpSchema,
  agentDiagnosisSchema,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  MAX_ENVELOPE_BYTES,
  MAX_PING_COUNT,
  MessageDecodeError,
  pingResult,
} from '../../protocol/index.ts'

const diagnosis = (): AgentDiagnosis => ({
  machine: 'edge-1',
  software: 'fleetmesh-agent/1.0.0',
  snapshot: {
    role: 'agent',
    pid: 42,
    peerId: '12D3KooWagent',
    at: 1_700_000_000_000,
    listen: ['/ip4/10.0.0.2/tcp/4001'],
    advertised: ['/ip4/10.0.0.2/tcp/4001'],
    connections: [
      {
        peer: '12D3KooWcoord',
        remoteAddr: '/ip4/203.0.113.7/tcp/4001',
        direction: 'outbound',
        relayed: false,
      },
    ],
    details: { coordinator: { connected: true, path: 'direct', addr: '/ip4/203.0.113.7/tcp/4001' } },
  },
  interfaces: [{ name: 'eth0', address: '10.0.0.2/255.255.255.0' }],
  coordinator: { peerId: '12D3KooWcoord', addrs: ['/ip4/203.0.113.7/tcp/4001'] },
  truncated: false,
})

describe('agent diagnosis schema', () => {
  it('accepts a diagnosis and carries it in a diagnosis frame', () => {
    const frame = { t: 'diagnosis' as const, nonce: 3, report: diagnosis() }
    expect(decodeControlFrame(encodeMessage(controlFrameSchema, frame), MAX_ENVELOPE_BYTES)).toEqual(frame)
  })

  it.each([
    [
      '65 listen addresses',
      (d: AgentDiagnosis) => (d.snapshot.listen = Array(65).fill('/ip4/1.2.3.4/tcp/1')),
    ],
    ['an address over 1024 characters', (d: AgentDiagnosis) => (d.snapshot.advertised = ['x'.repeat(1025)])],
    [
      '257 connections',
      (d: AgentDiagnosis) =>
        (d.snapshot.connections = Array(257).fill({
          peer: 'p',
          remoteAddr: '/ip4/1.2.3.4/tcp/1',
          direction: 'inbound',
          relayed: false,
        })),
    ],
    [
      '17 detail entries',
      (d: AgentDiagnosis) =>
        (d.snapshot.details = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i]))),
    ],
    ['65 interfaces', (d: AgentDiagnosis) => (d.interfaces = Array(65).fill({ name: 'eth0', address: 'a' }))],
    [
      '17 coordinator addresses',
      (d: AgentDiagnosis) => (d.coordinator.addrs = Array(17).fill('/ip4/1.2.3.4/tcp/1')),
    ],
    ['a field it does not define (a key)', (d: AgentDiagnosis) => Object.assign(d, { privateKey: 'secret' })],
  ])('refuses %s', (_, spoil) => {
    const d = diagnosis()
    spoil(d)
    expect(agentDiagnosisSchema.safeParse(d).success).toBe(false)
  })
})

describe('ping request and result', () => {
  it(`asks for 1 to ${MAX_PING_COUNT} probes`, () => {
    const op = (count: number) => adminOpSchema.safeParse({ op: 'ping', machine: 'edge-1', count }).success
    expect([op(0), op(1), op(MAX_PING_COUNT), op(MAX_PING_COUNT + 1), op(1.5)]).toEqual([
      false,
      true,
      true,
      false,
      false,
    ])
  })

  it('holds at most one entry a probe, a lost probe as null', () => {
    const result = (n: number) => ({
      machine: 'edge-1',
      path: 'relayed',
      remoteAddr: '/ip4/198.51.100.9/tcp/4001/p2p/relay/p2p-circuit',
      software: 'fleetmesh-agent/1.0.0',
      probes: Array.from({ length: n }, (_, i) => ({ seq: i + 1, rttMs: i === 0 ? null : 1.5 })),
    })
    expect(pingResult.safeParse(result(MAX_PING_COUNT)).success).toBe(true)
    expect(pingResult.safeParse(result(MAX_PING_COUNT + 1)).success).toBe(false)
  })
})

describe('decodeControlFrame', () => {
  it('reports a frame of an unknown type instead of failing', () => {
    const bytes = encodeCanonical({ t: 'rollout-hint', anything: [1, 2, 3] })
    expect(decodeControlFrame(bytes, MAX_ENVELOPE_BYTES)).toEqual({ unknown: 'rollout-hint' })
  })

  it('still refuses a malformed frame of a known type, and a frame without a type', () => {
    for (const value of [
      { t: 'diagnose', nonce: -1 },
      { t: 'diagnosis', nonce: 1, report: {} },
      { nonce: 1 },
    ])
      expect(() => decodeControlFrame(encodeCanonical(value), MAX_ENVELOPE_BYTES)).toThrow(MessageDecodeError)
  })

  it('enforces the size limit', () => {
    const bytes = encodeMessage(controlFrameSchema, { t: 'diagnosis', nonce: 1, report: diagnosis() })
    expect(() => decodeControlFrame(bytes, bytes.byteLength - 1)).toThrow(MessageDecodeError)
  })
})
