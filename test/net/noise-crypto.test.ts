// Noise's X25519 with node's key objects kept (net/noise-crypto.ts) must agree
// with the library's own on every shared secret, for the key pairs it makes and
// for keys it did not make, or handshakes between hosts would fail (or worse).
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { describe, expect, it } from 'vitest'
import { noiseCrypto } from '../../net/noise-crypto.ts'

describe("Noise's X25519 with key objects kept", () => {
  it('derives the same shared secrets as the library, both ways, whoever made the keys', () => {
    const ours = [noiseCrypto.generateX25519KeyPair(), noiseCrypto.generateX25519KeyPair()]
    const theirs = [defaultCrypto.generateX25519KeyPair(), defaultCrypto.generateX25519KeyPair()]
    const all = [...ours, ...theirs]
    for (const a of all)
      for (const b of all) {
        if (a === b) continue
        const expected = defaultCrypto.generateX25519SharedKey(a.privateKey, b.publicKey)
        expect(noiseCrypto.generateX25519SharedKey(a.privateKey, b.publicKey)).toEqual(expected)
        // the same remote key twice in a row, as the responder's ee and es use it
        expect(noiseCrypto.generateX25519SharedKey(a.privateKey, b.publicKey)).toEqual(expected)
        expect(noiseCrypto.generateX25519SharedKey(b.privateKey, a.publicKey)).toEqual(expected)
      }
  })

  it('reads a remote key by its bytes: an array reused for another key gives that key', () => {
    const me = noiseCrypto.generateX25519KeyPair()
    const [b, c] = [defaultCrypto.generateX25519KeyPair(), defaultCrypto.generateX25519KeyPair()]
    const buffer = new Uint8Array(b.publicKey)
    expect(noiseCrypto.generateX25519SharedKey(me.privateKey, buffer)).toEqual(
      defaultCrypto.generateX25519SharedKey(me.privateKey, b.publicKey),
    )
    buffer.set(c.publicKey)
    expect(noiseCrypto.generateX25519SharedKey(me.privateKey, buffer)).toEqual(
      defaultCrypto.generateX25519SharedKey(me.privateKey, c.publicKey),
    )
  })

  it('makes key pairs whose public half is the private half’s', () => {
    const pair = noiseCrypto.generateX25519KeyPair()
    expect(new Uint8Array(defaultCrypto.generateX25519KeyPairFromSeed(pair.privateKey).publicKey)).toEqual(
      pair.publicKey,
    )
  })
})
