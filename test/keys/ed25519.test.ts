import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import {
  DOMAINS,
  nodeEd25519,
  PrivateKey,
  signingInput,
  tweetnaclEd25519,
  useEd25519,
  verify,
} from '../../keys/index.ts'

afterEach(() => useEd25519(nodeEd25519))

describe('Ed25519 implementations agree', () => {
  it('derive the same public key from a seed', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (seed) => {
        expect(nodeEd25519.publicKeyFromSeed(seed)).toEqual(tweetnaclEd25519.publicKeyFromSeed(seed))
      }),
      { numRuns: 50 },
    )
  })

  it('tweetnacl signatures verify with node:crypto and the reverse', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ maxLength: 512 }),
        (seed, msg) => {
          const pub = nodeEd25519.publicKeyFromSeed(seed)
          const byNacl = tweetnaclEd25519.signer(seed)(msg)
          const byNode = nodeEd25519.signer(seed)(msg)
          expect(byNacl).toEqual(byNode) // Ed25519 is deterministic
          expect(nodeEd25519.verifyRaw(pub, msg, byNacl)).toBe(true)
          expect(tweetnaclEd25519.verifyRaw(pub, msg, byNode)).toBe(true)
        },
      ),
      { numRuns: 30 },
    )
  })

  it('both reject a flipped bit in message, signature or key', () => {
    const key = PrivateKey.generate()
    const msg = new TextEncoder().encode('fleet status')
    const sig = key.sign(DOMAINS.status, msg)
    for (const impl of [nodeEd25519, tweetnaclEd25519]) {
      useEd25519(impl)
      expect(verify(key.publicKey.bytes, DOMAINS.status, msg, sig)).toBe(true)
      const badMsg = Uint8Array.from(msg)
      badMsg[3] = (badMsg[3] as number) ^ 1
      expect(verify(key.publicKey.bytes, DOMAINS.status, badMsg, sig)).toBe(false)
      const badSig = Uint8Array.from(sig)
      badSig[10] = (badSig[10] as number) ^ 0x80
      expect(verify(key.publicKey.bytes, DOMAINS.status, msg, badSig)).toBe(false)
      const badKey = Uint8Array.from(key.publicKey.bytes)
      badKey[0] = (badKey[0] as number) ^ 1
      expect(verify(badKey, DOMAINS.status, msg, sig)).toBe(false)
      expect(verify(key.publicKey.bytes, DOMAINS.status, msg, sig.subarray(0, 63))).toBe(false)
    }
  })
})

describe('domain separation', () => {
  it('a signature made for one domain is rejected in every other', () => {
    const key = PrivateKey.generate()
    const payload = new TextEncoder().encode('same bytes')
    for (const signedFor of Object.values(DOMAINS)) {
      const sig = key.sign(signedFor, payload)
      for (const checkedAs of Object.values(DOMAINS)) {
        expect(verify(key.publicKey.bytes, checkedAs, payload, sig)).toBe(signedFor === checkedAs)
      }
    }
  })

  it('domain and payload cannot be shifted into each other', () => {
    const a = signingInput(DOMAINS.status, new TextEncoder().encode('x'))
    const b = signingInput(DOMAINS.manifest, new TextEncoder().encode('x'))
    expect(a).not.toEqual(b)
  })
})
