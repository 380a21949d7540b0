import { describe, expect, it } from 'vitest'
import { DOMAINS, issueCertificate, PrivateKey, type Scope } from '../../keys/index.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import {
  type AdmissionPolicy,
  admitManifest,
  buildManifest,
  type ManifestOptions,
  type ManifestRefusalCode,
  ManifestRefusedError,
  sealManifest,
  targetsMachine,
} from '../../protocol/manifest.ts'
import { type Manifest, manifestSchema } from '../../protocol/messages.ts'
import { hex } from '../../testkit/fixtures.ts'

const HOUR = 3_600_000
const NOW = Date.UTC(2026, 0, 15, 12)
const root = PrivateKey.generate()
const admin = PrivateKey.generate()

function chainFor(scope: Scope, serial = hex(16)) {
  return [
    issueCertificate(root, {
      subject: admin.publicKey,
      name: 'alice',
      capabilities: ['deploy'],
      scope,
      notBefore: NOW - HOUR,
      notAfter: NOW + 24 * HOUR,
      serial,
    }),
  ]
}
const labChain = chainFor({ machines: [], tags: ['lab'] })

const options = (overrides: Partial<ManifestOptions> = {}): ManifestOptions => ({
  fleetId: 'acme',
  sequence: 5,
  generation: 'web-1',
  targets: { machines: [], tags: ['lab'] },
  payload: { kind: 'archive', sha256: hex(32), size: 10, sources: [{ kind: 'coordinator' }] },
  now: NOW,
  ...overrides,
})
const seal = (m: Manifest, chain = labChain) => sealManifest(m, admin, chain)

/** The coordinator's policy: no machine, no last sequence. */
const coordinator: AdmissionPolicy = { fleetRoot: root.publicKey, fleetId: 'acme', now: NOW }
/** The agent's policy. */
const agent: AdmissionPolicy = { ...coordinator, machine: { name: 'edge-1', tags: ['lab'] }, lastSequence: 4 }

function refusal(envelope: Uint8Array, policy: AdmissionPolicy): ManifestRefusedError {
  try {
    admitManifest(envelope, policy)
  } catch (err) {
    if (err instanceof ManifestRefusedError) return err
    throw err
  }
  throw new Error('manifest was admitted')
}

function expectRefused(envelope: Uint8Array, policy: AdmissionPolicy, code: ManifestRefusalCode) {
  const err = refusal(envelope, policy)
  expect(err.code, err.message).toBe(code)
  return err
}

describe('buildManifest', () => {
  it('fills ids, activation and a validity window around now, and the result seals', () => {
    const m = buildManifest(options())
    expect(m).toMatchObject({
      v: 1,
      activation: 'profile',
      healthCheck: null,
      confirmTimeoutMs: 120_000,
      issuedAt: NOW,
      notBefore: NOW - 60_000,
      expiresAt: NOW + 7 * 24 * HOUR,
    })
    expect(m.id).toMatch(/^[0-9a-f]{32}$/)
    expect(m.rolloutId).toMatch(/^[0-9a-f]{32}$/)
    expect(m.id).not.toBe(buildManifest(options()).id)
    expect(manifestSchema.parse(m)).toEqual(m)
    expect(admitManifest(seal(m), coordinator).manifest).toEqual(m)
  })

  it('takes every default as an option', () => {
    const m = buildManifest(
      options({
        payload: {
          kind: 'nix',
          storePath: '/nix/store/0c7x8b3qjfhs9w6dzd7a7y8k7l2x1v0m-nixos-system-edge-24.11',
          substituters: [],
          trustedPublicKeys: [],
        },
        id: 'a'.repeat(32),
        rolloutId: 'b'.repeat(32),
        clockSkewMs: 1000,
        validForMs: HOUR,
        confirmTimeoutMs: 5000,
      }),
    )
    expect(m).toMatchObject({
      id: 'a'.repeat(32),
      rolloutId: 'b'.repeat(32),
      activation: 'switch',
      notBefore: NOW - 1000,
      expiresAt: NOW + HOUR,
      confirmTimeoutMs: 5000,
    })
  })
})

describe('admission rules', () => {
  it('admits a valid manifest on both sides, naming the signer', () => {
    const envelope = seal(buildManifest(options()))
    for (const policy of [coordinator, agent]) {
      const admitted = admitManifest(envelope, policy)
      expect(admitted.adminName).toBe('alice')
      expect(admitted.signer.equals(admin.publicKey)).toBe(true)
      expect(admitted.envelope).toBe(envelope)
    }
  })

  it('bad-envelope: not a manifest envelope, another domain, or an invalid manifest', () => {
    const sealed = sealEnvelope(manifestSchema, DOMAINS.manifest, buildManifest(options()), admin, labChain)
    expect(admitManifest(sealed, agent).manifest.fleetId).toBe('acme')
    expect(refusal(new Uint8Array([1, 2, 3]), agent).code).toBe('bad-envelope')
    const wrongDomain = refusal(
      sealEnvelope(manifestSchema, DOMAINS.status, buildManifest(options()), admin, labChain),
      coordinator,
    )
    expect(wrongDomain.code).toBe('bad-envelope')
    expect(wrongDomain.message).toMatch(/wrong-domain/)
    expect(wrongDomain.manifest).toBeNull()
  })

  it('unauthorised: the signer may not deploy to every target (the same rule on both sides)', () => {
    const inScope = seal(buildManifest(options({ targets: { machines: [], tags: ['lab'] } })))
    expect(admitManifest(inScope, coordinator).adminName).toBe('alice')
    // The coordinator checks the whole selector: one tag outside the scope is enough to refuse.
    const wider = seal(buildManifest(options({ targets: { machines: [], tags: ['lab', 'prod'] } })))
    const err = expectRefused(wider, coordinator, 'unauthorised')
    expect(err.message).toMatch(/does not cover/)
    expect(err.manifest?.targets.tags).toEqual(['lab', 'prod'])
    // The agent judges the same selector, not just its own machine (test/protocol/scope-agreement.test.ts).
    expectRefused(wider, agent, 'unauthorised')
    expectRefused(wider, { ...agent, machine: { name: 'edge-1', tags: ['prod'] } }, 'unauthorised')
    // A stranger's key, and a revoked certificate.
    expectRefused(
      sealManifest(buildManifest(options()), PrivateKey.generate(), labChain),
      agent,
      'unauthorised',
    )
    const serial = hex(16)
    const revocable = seal(buildManifest(options()), chainFor({ all: true }, serial))
    expect(admitManifest(revocable, { ...agent, revokedSerials: new Set([hex(16)]) }).adminName).toBe('alice')
    const revoked = expectRefused(revocable, { ...coordinator, revokedSerials: new Set([serial]) }, 'revoked')
    expect(revoked.message).toMatch(/revoked/)
  })

  it('wrong-fleet', () => {
    expect(admitManifest(seal(buildManifest(options({ fleetId: 'acme' }))), agent).manifest.fleetId).toBe(
      'acme',
    )
    const err = expectRefused(seal(buildManifest(options({ fleetId: 'globex' }))), coordinator, 'wrong-fleet')
    expect(err.message).toMatch(/"globex".*this coordinator.*"acme"/)
  })

  it('not-targeted: only the agent checks that the manifest names it', () => {
    const byName = seal(
      buildManifest(options({ targets: { machines: ['edge-1'], tags: [] } })),
      chainFor({ all: true }),
    )
    expect(admitManifest(byName, agent).manifest.targets.machines).toEqual(['edge-1'])
    const other = seal(
      buildManifest(options({ targets: { machines: ['edge-2'], tags: [] } })),
      chainFor({ all: true }),
    )
    expect(admitManifest(other, coordinator).manifest.targets.machines).toEqual(['edge-2'])
    expect(expectRefused(other, agent, 'not-targeted').message).toMatch(/"edge-1"/)
  })

  it('not-yet-valid and expired: now must lie in [notBefore, expiresAt)', () => {
    const m = buildManifest(options({ validForMs: HOUR }))
    expect(admitManifest(seal(m), { ...agent, now: m.notBefore }).manifest.id).toBe(m.id)
    expect(admitManifest(seal(m), { ...coordinator, now: m.expiresAt - 1 }).manifest.id).toBe(m.id)
    for (const policy of [coordinator, agent]) {
      expectRefused(seal(m), { ...policy, now: m.notBefore - 1 }, 'not-yet-valid')
      const expired = expectRefused(seal(m), { ...policy, now: m.expiresAt }, 'expired')
      expect(expired.message).toMatch(/fresh manifest/)
    }
  })

  it('replayed: only with a last sequence (the agent); the coordinator leaves ordering to its store', () => {
    expect(admitManifest(seal(buildManifest(options({ sequence: 5 }))), agent).manifest.sequence).toBe(5)
    expectRefused(seal(buildManifest(options({ sequence: 4 }))), agent, 'replayed')
    expectRefused(seal(buildManifest(options({ sequence: 1 }))), agent, 'replayed')
    expect(admitManifest(seal(buildManifest(options({ sequence: 1 }))), coordinator).manifest.sequence).toBe(
      1,
    )
  })
})

describe('targetsMachine', () => {
  it('matches by name or by any tag', () => {
    const targets = { machines: ['edge-1'], tags: ['lab'] }
    expect(targetsMachine(targets, 'edge-1', [])).toBe(true)
    expect(targetsMachine(targets, 'edge-2', ['prod', 'lab'])).toBe(true)
    expect(targetsMachine(targets, 'edge-2', ['prod'])).toBe(false)
  })
})
