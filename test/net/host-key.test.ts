// A host's own key signing with a kept key object (net/host-key.ts): the very
// signatures @libp2p/crypto's key makes, for every form of message it takes,
// and a host built with it still handshakes and identifies.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { Uint8ArrayList } from 'uint8arraylist'
import { describe, expect, it } from 'vitest'
import { keptSigningKey } from '../../net/host-key.ts'

describe("a host's signing key", () => {
  it('signs as the library key does, with its own kept sign', async () => {
    const key = await generateKeyPair('Ed25519')
    const kept = keptSigningKey(key)
    expect(Object.hasOwn(kept, 'sign')).toBe(true)
    expect(kept.type).toBe('Ed25519')
    expect(kept.publicKey.equals(key.publicKey)).toBe(true)
    expect(kept.equals(key)).toBe(true)
    for (const message of [new Uint8Array(0), new Uint8Array(300).fill(7)]) {
      const sig = await kept.sign(message)
      expect(Buffer.from(sig)).toEqual(Buffer.from(await key.sign(message)))
      expect(await key.publicKey.verify(message, sig)).toBe(true)
    }
    const list = new Uint8ArrayList(new Uint8Array([1, 2]), new Uint8Array([3]))
    expect(Buffer.from(await kept.sign(list))).toEqual(Buffer.from(await key.sign(list)))
    const aborted = AbortSignal.abort(new Error('stop'))
    expect(() => kept.sign(new Uint8Array(1), { signal: aborted })).toThrow('stop')
  })

  it('leaves a key of another type as it is', async () => {
    const key = await generateKeyPair('secp256k1')
    expect(keptSigningKey(key)).toBe(key)
  })
})
