/**
 * The coordinator (on submit) and every agent (before it applies) judge a
 * manifest's deploy scope by one rule, so they can never disagree: for any
 * chain of scopes, any targets and any machine the targets name, the
 * coordinator admits the manifest exactly when that machine's agent does.
 * Before the rule was shared, a tag-scoped admin naming a machine that carries
 * the tag was refused by the coordinator and accepted by the agent.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { issueCertificate, PrivateKey, type Scope, type SignedCertificate } from '../../keys/index.ts'
import {
  type AdmissionPolicy,
  admitManifest,
  buildManifest,
  ManifestRefusedError,
  sealManifest,
  type Targets,
  targetsMachine,
} from '../../protocol/index.ts'
import { hex } from '../../testkit/fixtures.ts'
import { thrownCode } from '../../testkit/thrown.ts'

const HOUR = 3_600_000
const NOW = Date.UTC(2026, 0, 15, 12)
const root = PrivateKey.generate()
/** root → keys[0] → keys[1] → keys[2]: the signer of a chain of n links is keys[n-1]. */
const keys = [PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()]

const NAMES = ['edge-1', 'edge-2', 'edge-3']
const TAGS = ['lab', 'prod', 'eu']

const subset = (items: string[]) => fc.subarray(items)
const scopeArb: fc.Arbitrary<Scope> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ all: true as const }) },
  { weight: 4, arbitrary: fc.record({ machines: subset(NAMES), tags: subset(TAGS) }) },
)
const targetsArb: fc.Arbitrary<Targets> = fc
  .record({ machines: subset(NAMES), tags: subset(TAGS) })
  .filter((t) => t.machines.length + t.tags.length > 0)
const machineArb = fc.record({ name: fc.constantFrom(...NAMES), tags: subset(TAGS) })

function chainOf(scopes: Scope[]): SignedCertificate[] {
  return scopes.map((scope, i) =>
    issueCertificate(i === 0 ? root : (keys[i - 1] as PrivateKey), {
      subject: (keys[i] as PrivateKey).publicKey,
      name: `admin-${i}`,
      capabilities: i < scopes.length - 1 ? ['admin', 'deploy'] : ['deploy'],
      scope,
      notBefore: NOW - HOUR,
      notAfter: NOW + HOUR,
      serial: hex(16),
    }),
  )
}

const coordinator: AdmissionPolicy = { fleetRoot: root.publicKey, fleetId: 'acme', now: NOW }

/** 'ok', or the refusal's code. */
function verdict(envelope: Uint8Array, policy: AdmissionPolicy): string {
  return thrownCode(() => admitManifest(envelope, policy), ManifestRefusedError) ?? 'ok'
}

function seal(scopes: Scope[], targets: Targets): Uint8Array {
  const manifest = buildManifest({
    fleetId: 'acme',
    sequence: 5,
    generation: 'g',
    targets,
    payload: { kind: 'archive', sha256: hex(32), size: 1, sources: [{ kind: 'coordinator' }] },
    now: NOW,
  })
  return sealManifest(manifest, keys[scopes.length - 1] as PrivateKey, chainOf(scopes))
}

describe('deploy scope: coordinator and agent agree', () => {
  it('a tag-scoped admin naming a machine that carries the tag is refused on both sides', () => {
    const envelope = seal([{ machines: [], tags: ['lab'] }], { machines: ['edge-1'], tags: [] })
    const agent = { ...coordinator, machine: { name: 'edge-1', tags: ['lab'] }, lastSequence: 4 }
    expect(verdict(envelope, coordinator)).toBe('unauthorised')
    expect(verdict(envelope, agent)).toBe('unauthorised')
  })

  it('for random scopes, targets and targeted machines (property)', () => {
    fc.assert(
      fc.property(
        fc.array(scopeArb, { minLength: 1, maxLength: 3 }),
        targetsArb,
        machineArb,
        (scopes, targets, machine) => {
          fc.pre(targetsMachine(targets, machine.name, machine.tags))
          const envelope = seal(scopes, targets)
          const agent = { ...coordinator, machine, lastSequence: 4 }
          expect(verdict(envelope, agent)).toBe(verdict(envelope, coordinator))
        },
      ),
      { numRuns: 300 },
    )
  })
})
