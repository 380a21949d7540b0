// The signed revocation list's rules (protocol/revocation.ts), which the coordinator,
// every agent and the admin CLI run alike, and the manifest admission rules that
// use it: a revoked signer is refused as "revoked", and a receiver acts on a
// manifest only once it holds the list up to the head its signer saw.
import { describe, expect, it } from 'vitest'
import {
  admitManifest,
  buildManifest,
  EMPTY_HEAD,
  type ManifestRefusalCode,
  ManifestRefusedError,
  manifestSchema,
  openRevocation,
  RevocationChain,
  RevocationError,
  type RevocationErrorCode,
  revocationBatches,
  sealManifest,
} from '../../protocol/index.ts'
import { hex } from '../../testkit/fixtures.ts'
import { HOUR, revocationFleet } from './revocation-fixtures.ts'

const fleet = revocationFleet()

function refusedEntry(list: RevocationChain, envelope: Uint8Array, code: RevocationErrorCode): void {
  const head = list.head
  let caught: unknown
  try {
    list.append(envelope)
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(RevocationError)
  expect((caught as RevocationError).code, (caught as Error).message).toBe(code)
  expect(list.head).toEqual(head)
}

describe('the revocation list', () => {
  it('chains entries from the fleet root, each on the hash of the one before', () => {
    const list = new RevocationChain(fleet.policy)
    const first = list.append(fleet.entry(EMPTY_HEAD, hex(16)))
    const second = list.append(fleet.entry(list.head, hex(16)))
    expect(list.head).toEqual({ seq: 2, hash: second.hash })
    expect(second.entry.prev).toBe(first.hash)
    expect(list.hashAt(0)).toBe(EMPTY_HEAD.hash)
    expect(list.revoked).toEqual(new Set([first.entry.serial, second.entry.serial]))
    // the same entries again, from someone else's copy, verify to the same list
    const copy = RevocationChain.from(
      fleet.policy,
      list.after(0).map((e) => e.envelope),
    )
    expect(copy.head).toEqual(list.head)
  })

  it('refuses an entry that does not extend the head, is for another fleet or goes back in time', () => {
    const list = new RevocationChain(fleet.policy)
    list.append(fleet.entry(EMPTY_HEAD, hex(16)))
    refusedEntry(list, fleet.entry({ seq: 1, hash: 'f'.repeat(64) }, hex(16)), 'not-next')
    refusedEntry(list, fleet.entry({ seq: 2, hash: list.head.hash }, hex(16)), 'not-next')
    refusedEntry(list, fleet.entry(list.head, hex(16), { fleetId: 'other' }), 'wrong-fleet')
    refusedEntry(list, fleet.entry(list.head, hex(16), { at: list.lastAt - 1 }), 'backdated')
    expect(() => openRevocation(new Uint8Array([1, 2, 3]))).toThrow(RevocationError)
  })

  it('takes entries only from admins of the whole fleet, checked at the entry time', () => {
    const list = new RevocationChain(fleet.policy)
    const deployer = fleet.signer({ caps: ['deploy'] })
    refusedEntry(list, fleet.entry(EMPTY_HEAD, hex(16), { by: deployer }), 'unauthorised')
    const labAdmin = fleet.signer({ caps: ['admin'], scope: { machines: [], tags: ['lab'] } })
    refusedEntry(list, fleet.entry(EMPTY_HEAD, hex(16), { by: labAdmin }), 'unauthorised')
    // An entry signed while its signer's certificate was valid stays valid after it expires.
    const shortLived = fleet.signer({ notAfter: Date.now() + 60_000 })
    list.append(fleet.entry(EMPTY_HEAD, hex(16), { by: shortLived }))
    // ...but it cannot date an entry into a validity window it no longer has.
    refusedEntry(
      list,
      fleet.entry(list.head, hex(16), { by: shortLived, at: Date.now() + HOUR }),
      'unauthorised',
    )
  })

  it('refuses entries by a signer an earlier entry revoked, not by one revoked by the same entry', () => {
    const list = new RevocationChain(fleet.policy)
    const mallory = fleet.signer()
    // revoking oneself is allowed: the entry is signed before it takes effect
    list.append(fleet.entry(EMPTY_HEAD, mallory.serial, { by: mallory }))
    refusedEntry(list, fleet.entry(list.head, hex(16), { by: mallory }), 'unauthorised')
  })

  it('accepts a copy that repeats what it holds, and refuses one that forks it, keeping its own', () => {
    const ours = new RevocationChain(fleet.policy)
    ours.append(fleet.entry(EMPTY_HEAD, hex(16)))
    const held = ours.after(0).map((e) => e.envelope)
    const next = fleet.entry(ours.head, hex(16))
    expect(ours.accept([...held, next])).toEqual({ added: 1 })
    const theirs = new RevocationChain(fleet.policy)
    theirs.append(fleet.entry(EMPTY_HEAD, hex(16)))
    const head = ours.head
    const result = ours.accept(theirs.after(0).map((e) => e.envelope))
    expect(result.added).toBe(0)
    expect(result.error?.code).toBe('fork')
    expect(ours.head).toEqual(head)
    expect(ours.relation(theirs.head)).toBe('fork')
    expect(ours.relation({ seq: 1, hash: ours.hashAt(1) as string })).toBe('behind')
    expect(ours.relation({ seq: 9, hash: hex(32) })).toBe('ahead')
  })

  it('cuts entries into frames by count and bytes', () => {
    const small = new Uint8Array(1000)
    const batches = revocationBatches(Array.from({ length: 600 }, () => small))
    expect(batches.map((b) => b.length)).toEqual([131, 131, 131, 131, 76])
    expect(revocationBatches([new Uint8Array(200_000), small]).map((b) => b.length)).toEqual([1, 1])
  })
})

describe('manifests and the revocation list', () => {
  const deployer = fleet.signer({ caps: ['deploy'] })
  const manifest = (head = EMPTY_HEAD) =>
    buildManifest({
      fleetId: 'acme',
      sequence: 3,
      generation: 'web-1',
      targets: { machines: ['edge-1'], tags: [] },
      payload: { kind: 'archive', sha256: hex(32), size: 1, sources: [{ kind: 'coordinator' }] },
      revocations: head,
    })
  const policy = (list: RevocationChain) => ({
    ...fleet.policy,
    machine: { name: 'edge-1', tags: [] },
    lastSequence: 0,
    revocations: list,
  })
  function refusal(envelope: Uint8Array, list: RevocationChain): ManifestRefusalCode {
    try {
      admitManifest(envelope, policy(list))
    } catch (err) {
      if (err instanceof ManifestRefusedError) return err.code
      throw err
    }
    throw new Error('manifest was admitted')
  }

  it('refuses a manifest whose signer the list revokes as "revoked"', () => {
    const list = new RevocationChain(fleet.policy)
    const envelope = sealManifest(manifest(), deployer.key, deployer.chain)
    expect(admitManifest(envelope, policy(list)).manifest.generation).toBe('web-1')
    list.append(fleet.entry(EMPTY_HEAD, deployer.serial))
    expect(refusal(envelope, list)).toBe('revoked')
  })

  it('acts on a manifest only when the list reaches, with the same entry, the head its signer saw', () => {
    const signerList = new RevocationChain(fleet.policy)
    signerList.append(fleet.entry(EMPTY_HEAD, hex(16)))
    signerList.append(fleet.entry(signerList.head, hex(16)))
    const envelope = sealManifest(manifest(signerList.head), deployer.key, deployer.chain)
    // withheld: the receiver got only the first entry
    const short = RevocationChain.from(fleet.policy, [signerList.after(0)[0]?.envelope as Uint8Array])
    expect(refusal(envelope, short)).toBe('revocations-missing')
    // forked: another second entry
    const forked = RevocationChain.from(fleet.policy, [signerList.after(0)[0]?.envelope as Uint8Array])
    forked.append(fleet.entry(forked.head, hex(16)))
    expect(refusal(envelope, forked)).toBe('revocations-mismatch')
    // the same list, or a longer one: admitted
    signerList.append(fleet.entry(signerList.head, hex(16)))
    expect(admitManifest(envelope, policy(signerList)).adminName).toMatch(/^admin-/)
  })

  it('leaves the head out of a manifest while the list is empty, and treats that as entry 0', () => {
    const m = manifest()
    expect('revocations' in m).toBe(false)
    expect(manifestSchema.safeParse(m).success).toBe(true)
    const envelope = sealManifest(m, deployer.key, deployer.chain)
    const list = new RevocationChain(fleet.policy)
    list.append(fleet.entry(EMPTY_HEAD, hex(16)))
    expect(admitManifest(envelope, policy(list)).manifest.id).toBe(m.id)
  })
})
