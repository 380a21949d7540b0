import fc from 'fast-check'
import nacl from 'tweetnacl'
import { describe, expect, it } from 'vitest'
import { ed25519PublicToX25519, openSealed, PrivateKey, SealedBoxError, seal } from '../../keys/index.ts'

describe('sealed boxes', () => {
  it('only the addressed machine opens them', () => {
    const machine = PrivateKey.generate()
    const other = PrivateKey.generate()
    const secret = new TextEncoder().encode('wifi-password=hunter2')
    const box = seal(machine.publicKey, secret)
    expect(openSealed(machine, box)).toEqual(secret)
    expect(() => openSealed(other, box)).toThrow(SealedBoxError)
  })

  it('any altered byte makes the box fail to open', () => {
    const machine = PrivateKey.generate()
    const box = seal(machine.publicKey, new Uint8Array(40).fill(7))
    for (let i = 0; i < box.byteLength; i++) {
      const bad = Uint8Array.from(box)
      bad[i] = (bad[i] as number) ^ 1
      expect(() => openSealed(machine, bad)).toThrow(SealedBoxError)
    }
    expect(() => openSealed(machine, box.subarray(0, 20))).toThrow(/shorter/)
  })

  it('derives the X25519 public key that matches the seed-derived secret (libsodium conversion)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (seed) => {
        const key = PrivateKey.fromSeed(seed)
        const h = nacl.hash(seed).subarray(0, 32)
        h[0] = (h[0] as number) & 248
        h[31] = ((h[31] as number) & 127) | 64
        expect(ed25519PublicToX25519(key.publicKey)).toEqual(nacl.scalarMult.base(h))
      }),
      { numRuns: 25 },
    )
  })
})
