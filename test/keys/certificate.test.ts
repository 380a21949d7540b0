import { describe, expect, it } from 'vitest'
import {
  type Capability,
  CertificateError,
  decodeCanonical,
  encodeCanonical,
  issueCertificate,
  PrivateKey,
  type Scope,
  type SignedCertificate,
  verifyChain,
} from '../../keys/index.ts'
import { thrownCode } from '../../testkit/thrown.ts'

const HOUR = 3_600_000
const root = PrivateKey.generate()
const alice = PrivateKey.generate()

function cert(
  opts: Partial<{
    caps: Capability[]
    scope: Scope
    notBefore: number
    notAfter: number
    issuer: PrivateKey
    subject: PrivateKey
    serial: string
  }> = {},
): SignedCertificate {
  return issueCertificate(opts.issuer ?? root, {
    subject: (opts.subject ?? alice).publicKey,
    name: 'alice',
    capabilities: opts.caps ?? ['deploy', 'read'],
    scope: opts.scope ?? { machines: ['m1'], tags: ['lab'] },
    notBefore: opts.notBefore ?? Date.now() - HOUR,
    notAfter: opts.notAfter ?? Date.now() + HOUR,
    ...(opts.serial ? { serial: opts.serial } : {}),
  })
}

const code = (fn: () => unknown) => thrownCode(fn, CertificateError)

const policy = {
  root: root.publicKey,
  signer: alice.publicKey,
  capability: 'deploy' as const,
  target: { kind: 'machine' as const, name: 'm1', tags: [] },
}

describe('certificate chains', () => {
  it('accepts a valid certificate and reports the authority', () => {
    const a = verifyChain([cert()], policy)
    expect(a.leaf.name).toBe('alice')
    expect(a.leaf.capabilities).toEqual(['deploy', 'read'])
  })

  it('covers machines by name or by tag, and nothing else', () => {
    const c = [cert()]
    expect(
      code(() => verifyChain(c, { ...policy, target: { kind: 'machine', name: 'm2', tags: ['lab'] } })),
    ).toBe(undefined)
    expect(
      code(() => verifyChain(c, { ...policy, target: { kind: 'machine', name: 'm2', tags: ['prod'] } })),
    ).toBe('out-of-scope')
    expect(code(() => verifyChain(c, { ...policy, target: { kind: 'fleet' } }))).toBe('out-of-scope')
    expect(
      code(() =>
        verifyChain(c, { ...policy, target: { kind: 'selector', machines: ['m1'], tags: ['lab'] } }),
      ),
    ).toBe(undefined)
    expect(
      code(() =>
        verifyChain(c, { ...policy, target: { kind: 'selector', machines: ['m1', 'm9'], tags: [] } }),
      ),
    ).toBe('out-of-scope')
    expect(
      code(() => verifyChain([cert({ scope: { all: true } })], { ...policy, target: { kind: 'fleet' } })),
    ).toBe(undefined)
  })

  it('rejects expired, not-yet-valid, missing-capability, revoked, wrong-issuer and signer-mismatch', () => {
    expect(
      code(() =>
        verifyChain([cert({ notBefore: Date.now() - 2 * HOUR, notAfter: Date.now() - HOUR })], policy),
      ),
    ).toBe('expired')
    expect(
      code(() =>
        verifyChain([cert({ notBefore: Date.now() + HOUR, notAfter: Date.now() + 2 * HOUR })], policy),
      ),
    ).toBe('not-yet-valid')
    expect(code(() => verifyChain([cert({ caps: ['read'] })], policy))).toBe('capability-missing')
    const serial = 'ab'.repeat(16)
    expect(
      code(() => verifyChain([cert({ serial })], { ...policy, revokedSerials: new Set([serial]) })),
    ).toBe('revoked')
    expect(code(() => verifyChain([cert({ issuer: PrivateKey.generate() })], policy))).toBe('wrong-issuer')
    expect(code(() => verifyChain([cert()], { ...policy, signer: PrivateKey.generate().publicKey }))).toBe(
      'signer-mismatch',
    )
    expect(code(() => verifyChain([], policy))).toBe('empty-chain')
  })

  it('a flipped bit anywhere in the certificate fails verification', () => {
    const c = cert()
    for (let i = 0; i < c.body.byteLength; i++) {
      const body = Uint8Array.from(c.body)
      body[i] = (body[i] as number) ^ 0x01
      const got = code(() => verifyChain([{ body, sig: c.sig }], policy))
      // Either the body no longer decodes or its signature no longer matches; never accepted.
      expect(['malformed', 'bad-signature', 'wrong-issuer']).toContain(got)
    }
    for (let i = 0; i < 64; i++) {
      const sig = Uint8Array.from(c.sig)
      sig[i] = (sig[i] as number) ^ 0x40
      expect(code(() => verifyChain([{ body: c.body, sig }], policy))).toBe('bad-signature')
    }
  })

  it('delegation needs "admin" on intermediates and never widens the grant', () => {
    const bob = PrivateKey.generate()
    const aliceAdmin = cert({ caps: ['admin', 'deploy'], scope: { machines: [], tags: ['lab'] } })
    const bobCert = issueCertificate(alice, {
      subject: bob.publicKey,
      name: 'bob',
      capabilities: ['deploy'],
      scope: { all: true },
      notAfter: Date.now() + HOUR,
    })
    const bobPolicy = { ...policy, signer: bob.publicKey }
    expect(
      code(() =>
        verifyChain([aliceAdmin, bobCert], {
          ...bobPolicy,
          target: { kind: 'machine', name: 'x', tags: ['lab'] },
        }),
      ),
    ).toBe(undefined)
    // bob's own cert says "all", but alice's only covers tag lab
    expect(
      code(() =>
        verifyChain([aliceAdmin, bobCert], {
          ...bobPolicy,
          target: { kind: 'machine', name: 'x', tags: ['prod'] },
        }),
      ),
    ).toBe('out-of-scope')
    const aliceNoAdmin = cert({ caps: ['deploy'] })
    expect(code(() => verifyChain([aliceNoAdmin, bobCert], bobPolicy))).toBe('capability-missing')
    expect(code(() => verifyChain([bobCert], bobPolicy))).toBe('wrong-issuer')
  })

  it('rejects a body that is valid CBOR but not canonical', () => {
    const c = cert()
    const value = decodeCanonical(c.body, 1 << 16) as Record<string, unknown>
    // Re-encode with keys in a different order by hand: cborg sorts, so build a map manually.
    const reordered = encodeCanonical(value)
    expect(reordered).toEqual(c.body)
    const longer = new Uint8Array([...c.body])
    // Replace the map header (shortest form 0xa9 for 9 entries) with the one-byte-length form 0xb8 0x09.
    expect(longer[0]).toBe(0xa9)
    const nonCanonical = new Uint8Array([0xb8, 0x09, ...longer.subarray(1)])
    const signed = { body: nonCanonical, sig: root.sign('fleetmesh/certificate/v1', nonCanonical) }
    expect(code(() => verifyChain([signed], policy))).toBe('malformed')
  })
})
