/**
 * Ed25519 sign and verify with domain separation, over two interchangeable
 * implementations: node:crypto (OpenSSL, the default: ~100x faster here, see
 * `npm run bench`) and tweetnacl (pure JS, named in the design card, kept as a
 * cross-check and for environments without OpenSSL's Ed25519). Both produce and
 * accept the same RFC 8032 signatures; test/keys/ed25519.test.ts proves it.
 *
 * Signed bytes: "fleetmesh-sig\0" || domain || "\0" || payload.
 */
import {
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from 'node:crypto'
import nacl from 'tweetnacl'
import { bytesKey, concatBytes, utf8 } from '../lib/index.ts'
import type { Domain } from './domains.ts'

export const SIGNATURE_BYTES = 64

const PREFIX = utf8.encode('fleetmesh-sig\0')
const SEPARATOR = new Uint8Array([0])
// DER wrappers that turn raw Ed25519 key bytes into PKCS#8 / SPKI for OpenSSL.
const PKCS8_PREFIX = Uint8Array.from(Buffer.from('302e020100300506032b657004220420', 'hex'))
const SPKI_PREFIX = Uint8Array.from(Buffer.from('302a300506032b6570032100', 'hex'))

const domainBytes = new Map<string, Uint8Array>()

export function signingInput(domain: Domain, payload: Uint8Array): Uint8Array {
  let d = domainBytes.get(domain)
  if (d === undefined) {
    d = concatBytes([PREFIX, utf8.encode(domain), SEPARATOR])
    domainBytes.set(domain, d)
  }
  return concatBytes([d, payload])
}

export interface Ed25519Impl {
  readonly name: string
  publicKeyFromSeed(seed: Uint8Array): Uint8Array
  /** Returns a signing function bound to the seed, so per-key set-up is paid once. */
  signer(seed: Uint8Array): (message: Uint8Array) => Uint8Array
  verifyRaw(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean
}

// Parsing a DER key into a KeyObject costs about as much as a verify, and the
// coordinator verifies many messages from the same few thousand keys, so keep them.
const PUBLIC_KEY_CACHE_LIMIT = 16_384
const publicKeyObjects = new Map<string, KeyObject>()

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  const id = bytesKey(publicKey)
  let key = publicKeyObjects.get(id)
  if (key === undefined) {
    key = createPublicKey({
      key: Buffer.from(concatBytes([SPKI_PREFIX, publicKey])),
      format: 'der',
      type: 'spki',
    })
    if (publicKeyObjects.size >= PUBLIC_KEY_CACHE_LIMIT) {
      const oldest = publicKeyObjects.keys().next().value
      if (oldest !== undefined) publicKeyObjects.delete(oldest)
    }
    publicKeyObjects.set(id, key)
  }
  return key
}

function privateKeyObject(seed: Uint8Array): KeyObject {
  return createPrivateKey({
    key: Buffer.from(concatBytes([PKCS8_PREFIX, seed])),
    format: 'der',
    type: 'pkcs8',
  })
}

export const nodeEd25519: Ed25519Impl = {
  name: 'node:crypto',
  publicKeyFromSeed(seed) {
    const jwk = createPublicKey(privateKeyObject(seed)).export({ format: 'jwk' })
    return new Uint8Array(Buffer.from(jwk.x as string, 'base64url'))
  },
  signer(seed) {
    const key = privateKeyObject(seed)
    return (message) => new Uint8Array(nodeSign(null, message, key))
  },
  verifyRaw(publicKey, message, signature) {
    if (publicKey.byteLength !== 32 || signature.byteLength !== SIGNATURE_BYTES) return false
    try {
      return nodeVerify(null, message, publicKeyObject(publicKey), signature)
    } catch {
      return false
    }
  },
}

export const tweetnaclEd25519: Ed25519Impl = {
  name: 'tweetnacl',
  publicKeyFromSeed(seed) {
    return nacl.sign.keyPair.fromSeed(seed).publicKey
  },
  signer(seed) {
    const { secretKey } = nacl.sign.keyPair.fromSeed(seed)
    return (message) => nacl.sign.detached(message, secretKey)
  },
  verifyRaw(publicKey, message, signature) {
    if (publicKey.byteLength !== 32 || signature.byteLength !== SIGNATURE_BYTES) return false
    return nacl.sign.detached.verify(message, signature, publicKey)
  },
}

let active: Ed25519Impl = nodeEd25519

/** Chooses the implementation used by sign/verify below (benchmarks and cross-checks switch it). */
export function useEd25519(impl: Ed25519Impl): void {
  active = impl
}

export function activeEd25519(): Ed25519Impl {
  return active
}

export function derivePublicKey(seed: Uint8Array): Uint8Array {
  return active.publicKeyFromSeed(seed)
}

/** A domain-separating signer bound to one seed and to the implementation active when it was made. */
export function signerFor(seed: Uint8Array): (domain: Domain, payload: Uint8Array) => Uint8Array {
  const raw = active.signer(seed)
  return (domain, payload) => raw(signingInput(domain, payload))
}

export function verify(
  publicKey: Uint8Array,
  domain: Domain,
  payload: Uint8Array,
  signature: Uint8Array,
): boolean {
  return active.verifyRaw(publicKey, signingInput(domain, payload), signature)
}
