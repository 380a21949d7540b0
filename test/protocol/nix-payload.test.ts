import { describe, expect, it } from 'vitest'
import { issueCertificate, NixSigningKey, PrivateKey } from '../../keys/index.ts'
import {
  type AdmissionPolicy,
  admitManifest,
  buildManifest,
  ManifestRefusedError,
  sealManifest,
} from '../../protocol/manifest.ts'
import { type Manifest, manifestSchema, payloadSchema } from '../../protocol/messages.ts'
import {
  MAX_CLOSURE_MAP_MACHINES,
  type NixPayload,
  narrowClosureMap,
  nixStorePathFor,
  nixStorePaths,
} from '../../protocol/nix-payload.ts'

const HOUR = 3_600_000
const NOW = Date.UTC(2026, 0, 15, 12)
const root = PrivateKey.generate()
const admin = PrivateKey.generate()
const chain = [
  issueCertificate(root, {
    subject: admin.publicKey,
    name: 'alice',
    capabilities: ['deploy'],
    scope: { machines: ['edge-1', 'edge-2', 'edge-3'], tags: ['lab'] },
    notBefore: NOW - HOUR,
    notAfter: NOW + 24 * HOUR,
  }),
]
const key = NixSigningKey.generate('fleet-cache-1').publicKey.toString()
const path = (c: string, name: string) => `/nix/store/${c.repeat(32)}-nixos-system-${name}`
const A = path('a', 'edge-1')
const B = path('b', 'edge-2')
const nix = (fields: Partial<NixPayload>): unknown => ({
  kind: 'nix',
  substituters: [],
  trustedPublicKeys: [key],
  ...fields,
})
const parsed = (payload: unknown) => payloadSchema.safeParse(payload)

describe('nix payload: one store path or a closure map', () => {
  it('takes either storePath or storePaths', () => {
    expect(parsed(nix({ storePath: A })).success).toBe(true)
    expect(parsed(nix({ storePaths: { 'edge-1': A, 'edge-2': B } })).success).toBe(true)
  })

  it('refuses both, neither, an empty map, bad machine names and bad store paths', () => {
    expect(parsed(nix({ storePath: A, storePaths: { 'edge-1': A } })).success).toBe(false)
    expect(parsed(nix({})).success).toBe(false)
    expect(parsed(nix({ storePaths: {} })).success).toBe(false)
    expect(parsed(nix({ storePaths: { Edge_1: A } })).success).toBe(false)
    expect(parsed(nix({ storePaths: { 'edge-1': '/tmp/not-a-store-path' } })).success).toBe(false)
  })

  it(`refuses a map of more than ${MAX_CLOSURE_MAP_MACHINES} machines`, () => {
    const map = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`m${i}`, A]))
    expect(parsed(nix({ storePaths: map(MAX_CLOSURE_MAP_MACHINES) })).success).toBe(true)
    expect(parsed(nix({ storePaths: map(MAX_CLOSURE_MAP_MACHINES + 1) })).success).toBe(false)
  })

  it("picks a machine's own closure, never an inherited property", () => {
    const map = nix({ storePaths: { 'edge-1': A, 'edge-2': B } }) as NixPayload
    expect(nixStorePathFor(map, 'edge-2')).toBe(B)
    expect(nixStorePathFor(map, 'edge-3')).toBeUndefined()
    expect(nixStorePathFor(map, 'constructor')).toBeUndefined()
    expect(nixStorePathFor(nix({ storePath: A }) as NixPayload, 'edge-3')).toBe(A)
    expect(nixStorePaths(map)).toEqual([A, B])
    expect(narrowClosureMap(map, ['edge-2', 'edge-9']).storePaths).toEqual({ 'edge-2': B })
  })
})

describe('admission of a closure map (rule closure-map-mismatch)', () => {
  const coordinator: AdmissionPolicy = { fleetRoot: root.publicKey, fleetId: 'acme', now: NOW }
  const agent = (name: string): AdmissionPolicy => ({
    ...coordinator,
    machine: { name, tags: ['lab'] },
    lastSequence: 0,
  })
  const sealed = (targets: Manifest['targets'], storePaths: Record<string, string>) =>
    sealManifest(
      buildManifest({
        fleetId: 'acme',
        sequence: 5,
        generation: 'nixos-1',
        targets,
        payload: nix({ storePaths }) as NixPayload,
        now: NOW,
      }),
      admin,
      chain,
    )
  const refusal = (envelope: Uint8Array, policy: AdmissionPolicy) => {
    try {
      admitManifest(envelope, policy)
    } catch (err) {
      if (err instanceof ManifestRefusedError) return err
      throw err
    }
    throw new Error('manifest was admitted')
  }

  it("admits one whose targets are exactly the map's machines, on both sides", () => {
    const envelope = sealed({ machines: ['edge-2', 'edge-1'], tags: [] }, { 'edge-1': A, 'edge-2': B })
    expect(admitManifest(envelope, coordinator).manifest.payload).toMatchObject({
      storePaths: { 'edge-2': B },
    })
    expect(admitManifest(envelope, agent('edge-1')).adminName).toBe('alice')
  })

  it.each([
    [
      'a target without a closure',
      { machines: ['edge-1', 'edge-3'], tags: [] },
      /\[edge-3\] have no closure/,
    ],
    ['a closure for a machine not targeted', { machines: ['edge-1'], tags: [] }, /names \[edge-2\]/],
    ['a tag among the targets', { machines: ['edge-1', 'edge-2'], tags: ['lab'] }, /targets tags \[lab\]/],
  ])('refuses %s, on both sides', (_, targets, message) => {
    const envelope = sealed(targets, { 'edge-1': A, 'edge-2': B })
    for (const policy of [coordinator, agent('edge-1')]) {
      const err = refusal(envelope, policy)
      expect(err.code, err.message).toBe('closure-map-mismatch')
      expect(err.message).toMatch(message)
    }
  })

  it('a manifest with a map is one schema-valid manifest', () => {
    const m = buildManifest({
      fleetId: 'acme',
      sequence: 1,
      generation: 'g',
      targets: { machines: ['edge-1'], tags: [] },
      payload: nix({ storePaths: { 'edge-1': A } }) as NixPayload,
      now: NOW,
    })
    expect(manifestSchema.safeParse(m).success).toBe(true)
    expect(m.activation).toBe('switch')
  })
})
