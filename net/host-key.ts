/**
 * A host's own Ed25519 key, signing with one node key object (net/host.ts).
 *
 * @libp2p/crypto's Ed25519 key turns its raw bytes into a JWK and parses that
 * into a node key object for every signature. A host signs in every Noise
 * handshake (its identity payload) and every identify answer (its peer
 * record), so a coordinator taking back a thousand agents parsed its key two
 * thousand times: 4% of its main thread in that storm. The key returned makes
 * the key object once and signs the same bytes with it; Ed25519 signatures are
 * deterministic, so they are the very same signatures.
 */
import { createPrivateKey, type KeyObject, sign } from 'node:crypto'
import type { AbortOptions, PrivateKey } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import { toBase64Url } from '../lib/index.ts'

/** `key` with a `sign` that keeps its key object; any other key type is returned as it is. */
export function keptSigningKey(key: PrivateKey): PrivateKey {
  if (key.type !== 'Ed25519') return key
  let object: KeyObject | undefined
  const kept: PrivateKey = Object.assign(
    Object.create(Object.getPrototypeOf(key) as object) as PrivateKey,
    key,
  )
  Object.defineProperty(kept, 'sign', {
    value(message: Uint8Array | Uint8ArrayList, options?: AbortOptions): Uint8Array {
      options?.signal?.throwIfAborted()
      // made on first use, as @libp2p/crypto makes it (the raw key is the seed then the public key)
      object ??= createPrivateKey({
        format: 'jwk',
        key: {
          kty: 'OKP',
          crv: 'Ed25519',
          d: toBase64Url(key.raw.subarray(0, 32)),
          x: toBase64Url(key.publicKey.raw),
        },
      })
      return sign(null, message instanceof Uint8Array ? message : message.subarray(), object)
    },
  })
  return kept
}
