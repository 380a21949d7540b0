/**
 * The rules for signed tag records (protocol/machine-tags.ts), which the
 * coordinator and the agent both run: one refusal code per rule, and the scope
 * rule on the old and the new tags, so a tag-scoped admin can neither pull a
 * machine into its tags nor push one out of them into another's.
 */
import { describe, expect, it } from 'vitest'
import { DOMAINS, issueCertificate, PrivateKey, type Scope } from '../../keys/index.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import {
  admitMachineTags,
  type MachineTags,
  type MachineTagsRefusalCode,
  MachineTagsRefusedError,
  machineTagsSchema,
  sealMachineTags,
  type TagsPolicy,
} from '../../protocol/machine-tags.ts'
import { hex } from '../../testkit/fixtures.ts'
import { thrownCode } from '../../testkit/thrown.ts'

const HOUR = 3_600_000
const NOW = Date.UTC(2026, 0, 15, 12)
const root = PrivateKey.generate()
const admin = PrivateKey.generate()

type Cap = 'deploy' | 'enroll' | 'read' | 'admin'
function chainFor(scope: Scope, caps: Cap[] = ['enroll'], serial = hex(16), issuer = root) {
  return [
    issueCertificate(issuer, {
      subject: admin.publicKey,
      name: 'alice',
      capabilities: caps,
      scope,
      notBefore: NOW - HOUR,
      notAfter: NOW + 24 * HOUR,
      serial,
    }),
  ]
}
const fleetWide = chainFor({ all: true })
const labOnly = chainFor({ machines: [], tags: ['lab', 'lab-eu'] })

const record = (overrides: Partial<MachineTags> = {}): MachineTags => ({
  v: 1,
  fleetId: 'acme',
  machine: 'edge-1',
  tags: ['lab-eu'],
  version: 1,
  issuedAt: NOW,
  ...overrides,
})
const policy = (
  machine: Partial<TagsPolicy['machine']> = {},
  extra: Partial<TagsPolicy> = {},
): TagsPolicy => ({
  fleetRoot: root.publicKey,
  fleetId: 'acme',
  now: NOW,
  machine: { name: 'edge-1', tags: ['lab'], version: 0, ...machine },
  ...extra,
})

function refusal(envelope: Uint8Array, p: TagsPolicy): MachineTagsRefusalCode {
  const code = thrownCode(() => admitMachineTags(envelope, p), MachineTagsRefusedError)
  if (code === undefined) throw new Error('tag record was admitted')
  return code
}

describe('tag record rules', () => {
  it('admits a record within scope and says what changed', () => {
    const admitted = admitMachineTags(sealMachineTags(record(), admin, labOnly), policy())
    expect(admitted).toMatchObject({ adminName: 'alice', added: ['lab-eu'], removed: ['lab'] })
    expect(admitted.record.tags).toEqual(['lab-eu'])
    // a fleet-wide admin may give any tags, none included
    const none = sealMachineTags(record({ tags: [] }), admin, fleetWide)
    expect(admitMachineTags(none, policy({ tags: ['prod'] })).removed).toEqual(['prod'])
  })

  it('bad-envelope: another domain, a tampered payload, unsorted tags', () => {
    const asManifest = sealEnvelope(machineTagsSchema, DOMAINS.manifest, record(), admin, labOnly)
    expect(refusal(asManifest, policy())).toBe('bad-envelope')
    const good = sealMachineTags(record(), admin, labOnly)
    const tampered = Uint8Array.from(good)
    const at = Buffer.from(tampered).indexOf('edge-1')
    tampered[at] = 'x'.charCodeAt(0)
    expect(refusal(tampered, policy())).toBe('bad-envelope')
    expect(() => sealMachineTags(record({ tags: ['lab', 'eu'] }), admin, labOnly)).toThrow(/sorted/)
  })

  it('wrong-fleet and wrong-machine', () => {
    expect(refusal(sealMachineTags(record({ fleetId: 'other' }), admin, labOnly), policy())).toBe(
      'wrong-fleet',
    )
    expect(refusal(sealMachineTags(record({ machine: 'edge-2' }), admin, labOnly), policy())).toBe(
      'wrong-machine',
    )
  })

  it('bad-chain: a chain from another root, or expired', () => {
    const stranger = chainFor({ all: true }, ['enroll'], hex(16), PrivateKey.generate())
    expect(refusal(sealMachineTags(record(), admin, stranger), policy())).toBe('bad-chain')
    const later = policy({}, { now: NOW + 48 * HOUR })
    expect(refusal(sealMachineTags(record(), admin, labOnly), later)).toBe('bad-chain')
  })

  it('revoked: a link of the chain is on the revocation list', () => {
    const serial = hex(16)
    const chain = chainFor({ all: true }, ['enroll'], serial)
    const p = policy({}, { revokedSerials: new Set([serial]) })
    expect(refusal(sealMachineTags(record(), admin, chain), p)).toBe('revoked')
  })

  it('capability-missing: deploy and admin do not change tags, enroll does', () => {
    const deployer = chainFor({ all: true }, ['deploy', 'admin', 'read'])
    expect(refusal(sealMachineTags(record(), admin, deployer), policy())).toBe('capability-missing')
  })

  it('old-tags-out-of-scope: a lab admin cannot retag a prod machine into lab', () => {
    const intoLab = sealMachineTags(record({ tags: ['lab'] }), admin, labOnly)
    expect(refusal(intoLab, policy({ tags: ['prod'] }))).toBe('old-tags-out-of-scope')
    // nor strip prod from a machine that carries lab as well
    expect(refusal(intoLab, policy({ tags: ['lab', 'prod'] }))).toBe('old-tags-out-of-scope')
    // nor claim an untagged machine its scope does not name
    expect(refusal(intoLab, policy({ tags: [] }))).toBe('old-tags-out-of-scope')
  })

  it('new-tags-out-of-scope: a lab admin cannot move a lab machine into prod, not even beside lab', () => {
    for (const tags of [['prod'], ['lab', 'prod'], []]) {
      const envelope = sealMachineTags(record({ tags }), admin, labOnly)
      expect(refusal(envelope, policy()), tags.join()).toBe('new-tags-out-of-scope')
    }
  })

  it('stale-version: an older or repeated record is refused', () => {
    const v1 = sealMachineTags(record({ version: 1, tags: ['lab-eu'] }), admin, labOnly)
    const v2 = sealMachineTags(record({ version: 2, tags: ['lab'] }), admin, labOnly)
    expect(admitMachineTags(v2, policy({ tags: ['lab-eu'], version: 1 })).record.version).toBe(2)
    // after v2 was taken, v1 replayed would move the machine back: refused
    expect(refusal(v1, policy({ tags: ['lab'], version: 2 }))).toBe('stale-version')
    expect(refusal(v2, policy({ tags: ['lab'], version: 2 }))).toBe('stale-version')
  })
})
