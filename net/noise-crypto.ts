/**
 * Noise's X25519 with node's key objects kept, for every host's Noise
 * handshakes (net/host.ts).
 *
 * @chainsafe/libp2p-noise's default turns raw key bytes into a node KeyObject
 * (DER wrapping and parsing) for every Diffie-Hellman, and exports a new key
 * pair's private key only to import it again for each use: 180 µs per DH and
 * 130 µs per key pair on this machine, against 84 and 71 µs with the objects
 * kept. A handshake makes a key pair and three DHs on each side, and a
 * coordinator takes a thousand at once when its agents come back.
 *
 * The key pairs this makes remember their private key object, and a remote key
 * used twice in a row (the responder's `ee` and `es`) is parsed once.
 * Keys it did not make (a static key from a seed, a key in pieces) take the
 * library's own path, with the same result.
 */
import { createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'

/** DER prefixes of an X25519 SubjectPublicKeyInfo and PKCS#8 private key: the raw 32 bytes follow. */
const SPKI_PREFIX = Buffer.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00])
const PKCS8_PREFIX = Buffer.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
])

/** Private key objects by the bytes this module handed out for them (weakly: a handshake's keys go with it). */
const privateObjects = new WeakMap<Uint8Array, KeyObject>()
/**
 * The remote key parsed last, by its content (not the array: a buffer may be
 * reused): the responder's `ee` and `es` use one right after the other.
 */
let lastPublic: { bytes: Buffer; key: KeyObject } | undefined

function publicObject(publicKey: Uint8Array): KeyObject {
  const bytes = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength)
  if (lastPublic?.bytes.equals(bytes)) return lastPublic.key
  const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, bytes]), type: 'spki', format: 'der' })
  lastPublic = { bytes: Buffer.from(bytes), key }
  return key
}

export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  generateX25519KeyPair() {
    const { publicKey, privateKey } = generateKeyPairSync('x25519')
    const raw = {
      publicKey: new Uint8Array(
        publicKey.export({ type: 'spki', format: 'der' }).subarray(SPKI_PREFIX.length),
      ),
      privateKey: new Uint8Array(
        privateKey.export({ type: 'pkcs8', format: 'der' }).subarray(PKCS8_PREFIX.length),
      ),
    }
    privateObjects.set(raw.privateKey, privateKey)
    return raw
  },
  generateX25519SharedKey(privateKey, publicKey) {
    const mine = privateKey instanceof Uint8Array ? privateObjects.get(privateKey) : undefined
    if (mine === undefined || !(publicKey instanceof Uint8Array) || publicKey.byteLength !== 32)
      return defaultCrypto.generateX25519SharedKey(privateKey, publicKey)
    return diffieHellman({ privateKey: mine, publicKey: publicObject(publicKey) })
  },
}
