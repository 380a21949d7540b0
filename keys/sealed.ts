/**
 * Sealed boxes (anonymous-sender public-key encryption) for per-machine secrets,
 * addressed to the machine's Ed25519 identity so no second key has to be enrolled.
 *
 * The recipient's X25519 key is derived the standard way (RFC 7748 birational map
 * for the public key, clamped SHA-512 of the seed for the secret), exactly as
 * libsodium's crypto_sign_ed25519_pk_to_curve25519 does. Format:
 *   ephemeralPublic(32) || nacl.box(plaintext, nonce, recipientX, ephemeralSecret)
 * with nonce = SHA-512(ephemeralPublic || recipientX)[0..24], so nothing else is sent.
 */
import { createHash } from 'node:crypto'
import nacl from 'tweetnacl'
import { concatBytes } from '../lib/index.ts'
import { SealedBoxError } from './errors.ts'
import type { PrivateKey, PublicKey } from './identity.ts'

const P = (1n << 255n) - 19n
export const SEAL_OVERHEAD = nacl.box.publicKeyLength + nacl.box.overheadLength

function modPow(base: bigint, exp: bigint): bigint {
  let result = 1n
  let b = ((base % P) + P) % P
  let e = exp
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P
    b = (b * b) % P
    e >>= 1n
  }
  return result
}

/** Montgomery u = (1 + y) / (1 - y) mod p, from the Edwards y coordinate. */
export function ed25519PublicToX25519(publicKey: PublicKey): Uint8Array {
  const bytes = Uint8Array.from(publicKey.bytes)
  bytes[31] = (bytes[31] as number) & 0x7f
  let y = 0n
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(bytes[i] as number)
  if (y >= P) throw new SealedBoxError('public key is not a valid Ed25519 point encoding')
  const denominator = (1n - y + P) % P
  if (denominator === 0n) throw new SealedBoxError('public key maps to the point at infinity')
  let u = ((1n + y) * modPow(denominator, P - 2n)) % P
  const out = new Uint8Array(32)
  for (let i = 0; i < 32; i++) {
    out[i] = Number(u & 0xffn)
    u >>= 8n
  }
  return out
}

function x25519SecretFromSeed(seed: Uint8Array): Uint8Array {
  const h = createHash('sha512').update(seed).digest()
  const sk = new Uint8Array(h.subarray(0, 32))
  sk[0] = (sk[0] as number) & 248
  sk[31] = ((sk[31] as number) & 127) | 64
  return sk
}

function nonceFor(ephemeral: Uint8Array, recipient: Uint8Array): Uint8Array {
  return new Uint8Array(
    createHash('sha512').update(ephemeral).update(recipient).digest().subarray(0, nacl.box.nonceLength),
  )
}

export function seal(recipient: PublicKey, plaintext: Uint8Array): Uint8Array {
  const recipientX = ed25519PublicToX25519(recipient)
  const eph = nacl.box.keyPair()
  const boxed = nacl.box(plaintext, nonceFor(eph.publicKey, recipientX), recipientX, eph.secretKey)
  eph.secretKey.fill(0)
  return concatBytes([eph.publicKey, boxed])
}

export function openSealed(recipient: PrivateKey, sealed: Uint8Array): Uint8Array {
  if (sealed.byteLength < SEAL_OVERHEAD) {
    throw new SealedBoxError(
      `sealed box is ${sealed.byteLength} bytes, shorter than the ${SEAL_OVERHEAD}-byte overhead`,
    )
  }
  const seed = recipient.exportSeed()
  const secret = x25519SecretFromSeed(seed)
  seed.fill(0)
  const recipientX = nacl.scalarMult.base(secret)
  const eph = sealed.subarray(0, nacl.box.publicKeyLength)
  const opened = nacl.box.open(
    sealed.subarray(nacl.box.publicKeyLength),
    nonceFor(eph, recipientX),
    eph,
    secret,
  )
  secret.fill(0)
  if (opened === null) {
    throw new SealedBoxError(
      'sealed box does not open with this key: it is addressed to another machine or was altered',
    )
  }
  return opened
}
