/**
 * Nix binary cache keys, in Nix's own text format so they interoperate with
 * `nix-store --generate-binary-cache-key`, `nix.conf`'s `trusted-public-keys`
 * and `nix store sign`:
 *
 *   public  "<name>:<base64 of the 32-byte Ed25519 public key>"
 *   secret  "<name>:<base64 of 64 bytes: the 32-byte seed, then the public key>"
 *
 * A Nix signature is a plain Ed25519 signature over a narinfo fingerprint (see
 * protocol/narinfo.ts), with no fleetmesh domain prefix: it must verify in Nix.
 * As with {@link PrivateKey}, the secret half refuses to be serialised or shown.
 *
 * @example
 *
 * ```ts
 * const key = NixSigningKey.generate('fleet-1')
 * await saveNixSigningKey(`${home}/nix-cache.sec`, key)
 * const trusted = NixPublicKey.parse(key.publicKey.toString())
 * trusted.verify(message, key.sign(message)) // true
 * ```
 */
import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { bytesEqual, concatBytes, fromBase64 } from '../lib/index.ts'
import { activeEd25519 } from './ed25519.ts'
import { InvalidKeyError, KeyFileError } from './errors.ts'
import { readSecretFile, writeSecretFile } from './secret-file.ts'

/** Key names as Nix accepts them in nix.conf (no colon, no white space). */
const KEY_NAME = /^[A-Za-z0-9._+-]{1,128}$/
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

function splitKey(text: string, bytes: number, what: string): { name: string; key: Uint8Array } {
  const colon = text.indexOf(':')
  const name = colon < 0 ? '' : text.slice(0, colon)
  const body = colon < 0 ? '' : text.slice(colon + 1).trim()
  if (!KEY_NAME.test(name))
    throw new InvalidKeyError(
      `${what} must look like "<name>:<base64>" with a name of letters, digits and . _ + -; got "${text.slice(0, 40)}"`,
    )
  const key = BASE64.test(body) ? fromBase64(body) : new Uint8Array(0)
  if (key.byteLength !== bytes)
    throw new InvalidKeyError(
      `${what} "${name}" must hold ${bytes} base64-encoded bytes, got ${key.byteLength}`,
    )
  return { name, key }
}

const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64')

export class NixPublicKey {
  readonly name: string
  readonly bytes: Uint8Array

  private constructor(name: string, bytes: Uint8Array) {
    this.name = name
    this.bytes = bytes
  }

  /** Parses "<name>:<base64>"; `what` names the value in the error (a flag, a manifest field). */
  static parse(text: string, what = 'a Nix public key'): NixPublicKey {
    const { name, key } = splitKey(text, 32, what)
    return new NixPublicKey(name, key)
  }

  static fromBytes(name: string, bytes: Uint8Array): NixPublicKey {
    return new NixPublicKey(name, Uint8Array.from(bytes))
  }

  verify(message: Uint8Array, signature: Uint8Array): boolean {
    return activeEd25519().verifyRaw(this.bytes, message, signature)
  }

  equals(other: NixPublicKey): boolean {
    return this.name === other.name && bytesEqual(this.bytes, other.bytes)
  }

  toString(): string {
    return `${this.name}:${toBase64(this.bytes)}`
  }

  toJSON(): string {
    return this.toString()
  }
}

export class NixSigningKey {
  readonly name: string
  readonly publicKey: NixPublicKey
  readonly #seed: Uint8Array
  #sign: ((message: Uint8Array) => Uint8Array) | undefined

  private constructor(name: string, seed: Uint8Array) {
    this.name = name
    this.#seed = seed
    this.publicKey = NixPublicKey.fromBytes(name, activeEd25519().publicKeyFromSeed(seed))
  }

  static generate(name: string): NixSigningKey {
    if (!KEY_NAME.test(name))
      throw new InvalidKeyError(`a Nix key name is 1-128 letters, digits and . _ + -; got "${name}"`)
    return new NixSigningKey(name, new Uint8Array(randomBytes(32)))
  }

  /** Parses Nix's secret key text; a key whose public half does not match its seed is refused. */
  static parse(text: string, what = 'a Nix secret key'): NixSigningKey {
    const { name, key } = splitKey(text.trim(), 64, what)
    const signing = new NixSigningKey(name, key.slice(0, 32))
    if (!bytesEqual(signing.publicKey.bytes, key.slice(32)))
      throw new InvalidKeyError(`${what} "${name}" is corrupt: its public half does not match its seed`)
    return signing
  }

  sign(message: Uint8Array): Uint8Array {
    this.#sign ??= activeEd25519().signer(this.#seed)
    return this.#sign(message)
  }

  /** Nix's secret key text, for writing the key file; nothing else should call it. */
  exportSecretText(): string {
    return `${this.name}:${toBase64(concatBytes([this.#seed, this.publicKey.bytes]))}`
  }

  toJSON(): never {
    throw new TypeError('refusing to serialise a Nix signing key')
  }

  toString(): string {
    return `NixSigningKey(<redacted>, public ${this.publicKey.toString()})`
  }

  [inspect.custom](): string {
    return this.toString()
  }
}

export async function saveNixSigningKey(path: string, key: NixSigningKey): Promise<void> {
  await writeSecretFile(path, `${key.exportSecretText()}\n`)
}

export async function loadNixSigningKey(path: string): Promise<NixSigningKey> {
  const text = await readSecretFile(path)
  try {
    return NixSigningKey.parse(text, `the Nix secret key in ${path}`)
  } catch (err) {
    throw new KeyFileError(path, (err as Error).message, { cause: err })
  }
}
