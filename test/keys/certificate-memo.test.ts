// An agent's memo of certificate links it decoded and verified
// (keys/certificate-memo.ts): a link shown again costs no Ed25519 verify, nothing
// that would fail passes because something like it passed before, and what
// changes with time is checked on every use.
import { afterEach, describe, expect, it } from 'vitest'
import {
  CertificateError,
  CertificateMemo,
  issueCertificate,
  nodeEd25519,
  PrivateKey,
  type SignedCertificate,
  useEd25519,
  verifyChain,
} from '../../keys/index.ts'
import { thrownCode } from '../../testkit/thrown.ts'
import { countVerifies } from '../../testkit/verify-count.ts'

const HOUR = 3_600_000
const root = PrivateKey.generate()
const alice = PrivateKey.generate()
const issue = (name = 'alice', issuer = root) =>
  issueCertificate(issuer, {
    subject: alice.publicKey,
    name,
    capabilities: ['deploy'],
    scope: { machines: [], tags: ['lab'] },
    notAfter: Date.now() + HOUR,
  })
const policy = { root: root.publicKey, signer: alice.publicKey, capability: 'deploy' as const }

afterEach(() => useEd25519(nodeEd25519))

const refusal = (chain: SignedCertificate[], memo: CertificateMemo) =>
  thrownCode(() => verifyChain(chain, { ...policy, memo }), CertificateError)

describe('certificate memo', () => {
  it('verifies a link once, however often the chain is shown', () => {
    const memo = new CertificateMemo()
    const chain = [issue()]
    const verifies = countVerifies()
    for (let i = 0; i < 5; i++) expect(verifyChain(chain, { ...policy, memo }).leaf.name).toBe('alice')
    expect(verifies.count).toBe(1)
    // without a memo, every check verifies
    verifyChain(chain, policy)
    expect(verifies.count).toBe(2)
  })

  it('does not pass a tampered link, another issuer, or a signature moved to other bytes', () => {
    const memo = new CertificateMemo()
    const good = issue()
    expect(refusal([good], memo)).toBeUndefined()
    const body = Uint8Array.from(good.body)
    body[body.length - 1] = (body[body.length - 1] as number) ^ 1
    const tampered = { body, sig: good.sig }
    expect(refusal([tampered], memo)).not.toBeUndefined()
    const other = issue('alice', PrivateKey.generate())
    expect(refusal([other], memo)).toBe('wrong-issuer')
    const otherBody = issue('bob')
    expect(refusal([{ body: otherBody.body, sig: good.sig }], memo)).toBe('bad-signature')
    // and a failure is not remembered as a pass
    expect(refusal([{ body: otherBody.body, sig: good.sig }], memo)).toBe('bad-signature')
    expect(memo.size).toBe(1)
  })

  it('still refuses a remembered link once it is revoked or expired', () => {
    const memo = new CertificateMemo()
    const chain = [issue()]
    const authority = verifyChain(chain, { ...policy, memo })
    const serial = authority.leaf.serial
    expect(refusal(chain, memo)).toBeUndefined()
    const revoked = { ...policy, memo, revokedSerials: new Set([serial]) }
    expect(thrownCode(() => verifyChain(chain, revoked), CertificateError)).toBe('revoked')
    const later = { ...policy, memo, now: Date.now() + 2 * HOUR }
    expect(thrownCode(() => verifyChain(chain, later), CertificateError)).toBe('expired')
  })

  it('keeps at most its limit, dropping the oldest', () => {
    const memo = new CertificateMemo(2)
    const [a, b, c] = [issue('a'), issue('b'), issue('c')]
    for (const x of [a, b, c]) verifyChain([x], { ...policy, memo })
    expect(memo.size).toBe(2)
    const verifies = countVerifies()
    verifyChain([c], { ...policy, memo })
    expect(verifies.count).toBe(0)
    verifyChain([a], { ...policy, memo })
    expect(verifies.count).toBe(1)
  })
})
