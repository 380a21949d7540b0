/**
 * Ed25519 identities. One key is both the peer's libp2p PeerId and its signing
 * key, so the identity a connection authenticates (Noise) is the identity that
 * signs messages.
 *
 * Public and private keys are distinct classes so a private key can never be
 * passed where a public one is expected; a PrivateKey refuses to be serialised
 * by JSON.stringify or shown by console.log, so it cannot leak into logs.
 */
import { randomBytes } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { inspect } from 'node:util'
import { privateKeyFromRaw, publicKeyFromRaw } from '@libp2p/crypto/keys'
import type { Ed25519PrivateKey, Ed25519PublicKey, PeerId } from '@libp2p/interface'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { concatBytes, fromBase64Url, toBase64Url } from '../lib/index.ts'
import type { Domain } from './domains.ts'
import { activeEd25519, derivePublicKey, signerFor } from './ed25519.ts'
import { InvalidKeyError, KeyFileError } from './errors.ts'
import { readSecretFile, writeSecretFile } from './secret-file.ts'

export const PUBLIC_KEY_BYTES = 32
export const SEED_BYTES = 32

export class PublicKey {
  readonly bytes: Uint8Array
  #text: string | undefined

  private constructor(bytes: Uint8Array) {
    this.bytes = bytes
  }

  static fromBytes(bytes: Uint8Array): PublicKey {
    if (!(bytes instanceof Uint8Array) || bytes.byteLength !== PUBLIC_KEY_BYTES) {
      throw new InvalidKeyError(
        `an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, got ${bytes?.byteLength}`,
      )
    }
    return new PublicKey(Uint8Array.from(bytes))
  }

  /** Parses the base64url text form produced by toString(). */
  static parse(text: string): PublicKey {
    let bytes: Uint8Array
    try {
      bytes = fromBase64Url(text.trim())
    } catch {
      throw new InvalidKeyError(`"${text.slice(0, 60)}" is not a base64url Ed25519 public key`)
    }
    return PublicKey.fromBytes(bytes)
  }

  static fromPeerId(peerId: PeerId): PublicKey {
    if (peerId.type !== 'Ed25519' || peerId.publicKey === undefined) {
      throw new InvalidKeyError(`peer ${peerId.toString()} does not have an Ed25519 identity`)
    }
    return PublicKey.fromBytes(peerId.publicKey.raw)
  }

  equals(other: PublicKey): boolean {
    return this.toString() === other.toString()
  }

  toString(): string {
    this.#text ??= toBase64Url(this.bytes)
    return this.#text
  }

  toJSON(): string {
    return this.toString()
  }

  toLibp2p(): Ed25519PublicKey {
    return publicKeyFromRaw(this.bytes) as Ed25519PublicKey
  }

  toPeerId(): PeerId {
    return peerIdFromPublicKey(this.toLibp2p())
  }

  [inspect.custom](): string {
    return `PublicKey(${this.toString()})`
  }
}

export class PrivateKey {
  readonly #seed: Uint8Array
  readonly publicKey: PublicKey
  #signer: { impl: string; sign: (domain: Domain, payload: Uint8Array) => Uint8Array } | undefined

  private constructor(seed: Uint8Array) {
    this.#seed = seed
    this.publicKey = PublicKey.fromBytes(derivePublicKey(seed))
  }

  static generate(): PrivateKey {
    return new PrivateKey(new Uint8Array(randomBytes(SEED_BYTES)))
  }

  static fromSeed(seed: Uint8Array): PrivateKey {
    if (!(seed instanceof Uint8Array) || seed.byteLength !== SEED_BYTES) {
      throw new InvalidKeyError(`an Ed25519 seed is ${SEED_BYTES} bytes, got ${seed?.byteLength}`)
    }
    return new PrivateKey(Uint8Array.from(seed))
  }

  /** Domain-separated signature; see sign.ts for the exact signed bytes. */
  sign(domain: Domain, payload: Uint8Array): Uint8Array {
    const impl = activeEd25519().name
    if (this.#signer?.impl !== impl) this.#signer = { impl, sign: signerFor(this.#seed) }
    return this.#signer.sign(domain, payload)
  }

  /** Raw seed, for the few places that must derive keys (sealed boxes) or write the key file. */
  exportSeed(): Uint8Array {
    return Uint8Array.from(this.#seed)
  }

  toLibp2p(): Ed25519PrivateKey {
    return privateKeyFromRaw(concatBytes([this.#seed, this.publicKey.bytes])) as Ed25519PrivateKey
  }

  toPeerId(): PeerId {
    return this.publicKey.toPeerId()
  }

  toJSON(): never {
    throw new TypeError('refusing to serialise a private key')
  }

  toString(): string {
    return `PrivateKey(<redacted>, public ${this.publicKey.toString()})`
  }

  [inspect.custom](): string {
    return this.toString()
  }
}

const FILE_KIND = 'fleetmesh-ed25519-private-key'

/**
 * Writes the key with mode 0600 via a temporary file and rename, so a crash never
 * leaves a half-written key and the key is never readable by others, not even briefly.
 */
export async function saveIdentity(path: string, key: PrivateKey): Promise<void> {
  const text = `${JSON.stringify({ kind: FILE_KIND, seed: toBase64Url(key.exportSeed()), publicKey: key.publicKey.toString() })}\n`
  await writeSecretFile(path, text)
}

export async function loadIdentity(path: string): Promise<PrivateKey> {
  const text = await readSecretFile(path)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new KeyFileError(path, `key file ${path} is not valid JSON`, { cause: err })
  }
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    (parsed as { kind?: unknown }).kind !== FILE_KIND ||
    typeof (parsed as { seed?: unknown }).seed !== 'string'
  ) {
    throw new KeyFileError(
      path,
      `key file ${path} is not a fleetmesh private key (expected kind "${FILE_KIND}")`,
    )
  }
  let key: PrivateKey
  try {
    key = PrivateKey.fromSeed(fromBase64Url((parsed as { seed: string }).seed))
  } catch (err) {
    throw new KeyFileError(path, `key file ${path} holds a malformed seed: ${(err as Error).message}`, {
      cause: err,
    })
  }
  const claimed = (parsed as { publicKey?: unknown }).publicKey
  if (typeof claimed === 'string' && claimed !== key.publicKey.toString()) {
    throw new KeyFileError(path, `key file ${path} is corrupt: its public key does not match its seed`)
  }
  return key
}

/** Loads the key at path, or creates and saves a new one if the file does not exist. */
export async function loadOrCreateIdentity(path: string): Promise<PrivateKey> {
  try {
    await stat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    const key = PrivateKey.generate()
    await saveIdentity(path, key)
    return key
  }
  return loadIdentity(path)
}
