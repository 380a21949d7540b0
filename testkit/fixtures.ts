/** Sample messages shared by the protocol tests; each is valid against its schema. */
import { randomBytes } from 'node:crypto'
import { type IssueOptions, issueCertificate, PrivateKey } from '../keys/index.ts'
import {
  type AdminRequest,
  buildManifest,
  type ControlFrame,
  type EnrollRequest,
  type MachineView,
  type Manifest,
  type StatusReport,
} from '../protocol/index.ts'

export const hex = (n: number) => randomBytes(n).toString('hex')

/**
 * A fresh fleet root and an admin it certified with `options` (one link, named
 * "ops" and valid for an hour unless they say otherwise).
 */
export function certifiedAdmin(
  options: Omit<IssueOptions, 'subject' | 'name' | 'notAfter'> & Partial<IssueOptions>,
) {
  const root = PrivateKey.generate()
  const admin = PrivateKey.generate()
  const chain = [
    issueCertificate(root, {
      name: 'ops',
      notAfter: Date.now() + 3_600_000,
      ...options,
      subject: admin.publicKey,
    }),
  ]
  return { root, admin, chain }
}

export function sampleManifest(overrides: Partial<Manifest> = {}): Manifest {
  return {
    ...buildManifest({
      fleetId: 'acme',
      sequence: 7,
      generation: 'web-2026.11.23',
      targets: { machines: ['edge-1'], tags: ['lab'] },
      payload: {
        kind: 'archive',
        sha256: hex(32),
        size: 1234,
        sources: [{ kind: 'coordinator' }, { kind: 'http', url: 'https://cache.example/x.tar' }],
      },
      healthCheck: { command: ['./health'], timeoutMs: 5000, retries: 2, intervalMs: 500 },
      confirmTimeoutMs: 30_000,
      clockSkewMs: 1000,
      validForMs: 86_400_000,
    }),
    ...overrides,
  }
}

export const nixManifest = (): Manifest =>
  sampleManifest({
    payload: {
      kind: 'nix',
      storePath: '/nix/store/0c7x8b3qjfhs9w6dzd7a7y8k7l2x1v0m-nixos-system-edge-24.11',
      substituters: ['https://cache.nixos.org'],
      trustedPublicKeys: ['cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='],
    },
    activation: 'switch',
  })

export function sampleStatus(overrides: Partial<StatusReport> = {}): StatusReport {
  return {
    v: 1,
    machine: 'edge-1',
    seq: 42,
    state: 'committed',
    currentGeneration: 'web-2026.11.23',
    desiredGeneration: 'web-2026.11.23',
    manifestId: hex(16),
    manifestSequence: 7,
    rolloutId: hex(16),
    progress: null,
    error: null,
    facts: { os: 'linux', arch: 'x64' },
    timestamp: Date.now(),
    ...overrides,
  }
}

export const sampleAdminRequests = (): AdminRequest[] =>
  [
    { op: 'fleet-info' as const },
    { op: 'machines' as const },
    { op: 'submit-manifest' as const, envelope: new Uint8Array(randomBytes(100)) },
    { op: 'watch' as const, rolloutId: null },
    { op: 'audit' as const, after: 0, limit: 100 },
    { op: 'revoke' as const, serial: hex(16), reason: 'laptop stolen' },
    { op: 'upload-blob' as const, sha256: hex(32), size: 99 },
  ].map((body) => ({ v: 1 as const, nonce: hex(16), issuedAt: Date.now(), body }))

export const sampleControlFrames = (): ControlFrame[] => [
  {
    t: 'hello',
    wire: 1,
    role: 'agent',
    software: 'fleetmesh/0.1.0',
    capabilities: ['profile'],
    machine: 'edge-1',
    lastAckedSeq: 3,
  },
  { t: 'manifest', envelope: new Uint8Array(randomBytes(64)) },
  { t: 'status', envelope: new Uint8Array(randomBytes(64)) },
  { t: 'ack', seq: 9 },
  { t: 'ping', nonce: 1 },
  { t: 'pong', nonce: 1 },
  { t: 'error', error: { code: 'not-enrolled', message: 'enroll first' } },
]

export const sampleEnroll = (): EnrollRequest => ({
  t: 'enroll',
  token: 'fmtok1.abc',
  facts: { hostname: 'edge-1' },
})

/** A machine as `fleetmesh machines` shows it: online, committed on `generation`. */
export function sampleMachineView(overrides: Partial<MachineView> = {}): MachineView {
  return {
    name: 'edge-1',
    peerId: '12D3KooWPlaceholder',
    tags: [],
    online: true,
    path: 'direct',
    enrolledAt: 0,
    lastSeen: Date.now(),
    state: 'committed',
    currentGeneration: 'v1',
    desiredGeneration: 'v1',
    manifestId: null,
    rolloutId: null,
    desiredManifestId: null,
    desiredRolloutId: null,
    progress: null,
    error: null,
    rebootRequired: false,
    reportedAt: Date.now(),
    agentVersion: 'fleetmesh-agent/0.1.0',
    ...overrides,
  }
}
