/**
 * Narinfo files: what a Nix binary cache says about one store path, in Nix's
 * own text format so the agent can serve them to the local Nix unchanged.
 *
 *   StorePath: /nix/store/<hash>-<name>
 *   URL: nar/<file hash>.nar
 *   Compression: none
 *   FileHash: sha256:<nix base32>      FileSize: <bytes>
 *   NarHash: sha256:<nix base32>       NarSize: <bytes>
 *   References: <hash>-<name> …        Deriver: <hash>-<name>.drv
 *   Sig: <key name>:<base64>           (one line per signature)
 *
 * A signature is Ed25519 over the fingerprint
 * `1;<store path>;<nar hash>;<nar size>;<full reference paths, sorted, comma-separated>`,
 * exactly as Nix computes it, so a path signed here verifies in Nix and a path
 * signed by `nix store sign` verifies here.
 *
 * @example
 *
 * ```ts
 * const info = parseNarInfo(text)
 * const check = checkNarInfoSignature(info, [NixPublicKey.parse('cache-1:…')])
 * if (!check.ok) throw new Error(check.reason)
 * ```
 */
import type { NixPublicKey, NixSigningKey } from '../keys/index.ts'
import { CodedError, fromBase64, fromNixBase32, toHex, toNixBase32, utf8 } from '../lib/index.ts'

export const STORE_DIR = '/nix/store'
/** A narinfo is small; one that is not is an attack on whoever parses it. */
export const MAX_NARINFO_BYTES = 64 * 1024
export const MAX_REFERENCES = 4096
export const MAX_SIGNATURES = 16

const STORE_BASENAME = /^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$/
const NIX_HASH_PART = /^[0-9a-df-np-sv-z]{32}$/

export type NarInfoErrorCode = 'malformed' | 'too-large'

export class NarInfoError extends CodedError<NarInfoErrorCode> {
  override name = 'NarInfoError'
}

export interface NarInfo {
  storePath: string
  /** Where the NAR is, relative to the cache root */
  url: string
  compression: string
  /** `sha256:<nix base32>` of the file at `url` */
  fileHash: string | null
  fileSize: number | null
  /** `sha256:<nix base32>` of the uncompressed NAR */
  narHash: string
  narSize: number
  /** Store path basenames (`<hash>-<name>`), as Nix writes them */
  references: string[]
  deriver: string | null
  /** Content address (`CA:`), for paths that need no signature */
  ca: string | null
  /** `<key name>:<base64 signature>` */
  sigs: string[]
}

export function isStorePath(path: string): boolean {
  return path.startsWith(`${STORE_DIR}/`) && STORE_BASENAME.test(path.slice(STORE_DIR.length + 1))
}

/** The 32-character hash part of a store path: the name of its narinfo (`<hash>.narinfo`). */
export function storePathHash(path: string): string {
  if (!isStorePath(path))
    throw new NarInfoError('malformed', `"${path}" is not a /nix/store/<hash>-<name> path`)
  return path.slice(STORE_DIR.length + 1, STORE_DIR.length + 33)
}

export function isStorePathHash(text: string): boolean {
  return NIX_HASH_PART.test(text)
}

/** SHA-256 hex as Nix writes it in narinfo files: `sha256:<nix base32>`. */
export function nixSha256(hex: string): string {
  return `sha256:${toNixBase32(new Uint8Array(Buffer.from(hex, 'hex')))}`
}

/**
 * The SHA-256 in any form Nix prints (`sha256:<base32>`, `sha256:<hex>`, SRI
 * `sha256-<base64>`) as lowercase hex, which is how fleetmesh names blobs.
 */
export function sha256HexOfNixHash(hash: string): string {
  if (hash.startsWith('sha256-')) {
    const bytes = fromBase64(hash.slice(7))
    if (bytes.byteLength === 32) return toHex(bytes)
  } else if (hash.startsWith('sha256:')) {
    const body = hash.slice(7)
    if (/^[0-9a-f]{64}$/.test(body)) return body
    try {
      return toHex(fromNixBase32(body, 32))
    } catch {
      // falls through to the error below
    }
  }
  throw new NarInfoError('malformed', `"${hash.slice(0, 80)}" is not a SHA-256 hash as Nix writes one`)
}

function count(value: string, field: string): number {
  if (!/^\d{1,15}$/.test(value))
    throw new NarInfoError('malformed', `narinfo ${field} "${value}" is not a byte count`)
  return Number(value)
}

function basename(value: string, field: string): string {
  if (!STORE_BASENAME.test(value))
    throw new NarInfoError('malformed', `narinfo ${field} "${value.slice(0, 80)}" is not a store path name`)
  return value
}

/** Parses and bounds a narinfo; every error names the field that is wrong. */
export function parseNarInfo(text: string): NarInfo {
  if (text.length > MAX_NARINFO_BYTES)
    throw new NarInfoError(
      'too-large',
      `narinfo is ${text.length} bytes; at most ${MAX_NARINFO_BYTES} are accepted`,
    )
  const fields = new Map<string, string>()
  const sigs: string[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const colon = line.indexOf(': ')
    if (colon <= 0)
      throw new NarInfoError('malformed', `narinfo line "${line.slice(0, 80)}" is not "Key: value"`)
    const key = line.slice(0, colon)
    const value = line.slice(colon + 2)
    if (key === 'Sig') {
      if (sigs.length >= MAX_SIGNATURES)
        throw new NarInfoError('malformed', `narinfo has more than ${MAX_SIGNATURES} signatures`)
      sigs.push(value)
    } else if (fields.has(key)) throw new NarInfoError('malformed', `narinfo repeats the ${key} field`)
    else fields.set(key, value)
  }
  const need = (key: string): string => {
    const v = fields.get(key)
    if (v === undefined) throw new NarInfoError('malformed', `narinfo has no ${key} field`)
    return v
  }
  const storePath = need('StorePath')
  if (!isStorePath(storePath))
    throw new NarInfoError('malformed', `narinfo StorePath "${storePath.slice(0, 80)}" is not a store path`)
  const narHash = need('NarHash')
  sha256HexOfNixHash(narHash)
  const fileHash = fields.get('FileHash') ?? null
  if (fileHash !== null) sha256HexOfNixHash(fileHash)
  const url = need('URL')
  if (url.length > 1024 || url.includes('..') || url.startsWith('/'))
    throw new NarInfoError(
      'malformed',
      `narinfo URL "${url.slice(0, 80)}" must be a relative path inside the cache`,
    )
  const refText = fields.get('References') ?? ''
  const references = refText === '' ? [] : refText.split(' ').map((r) => basename(r, 'References'))
  if (references.length > MAX_REFERENCES)
    throw new NarInfoError(
      'malformed',
      `narinfo has ${references.length} references; at most ${MAX_REFERENCES}`,
    )
  const deriver = fields.get('Deriver')
  const fileSize = fields.get('FileSize')
  return {
    storePath,
    url,
    compression: fields.get('Compression') ?? 'bzip2',
    fileHash,
    fileSize: fileSize === undefined ? null : count(fileSize, 'FileSize'),
    narHash,
    narSize: count(need('NarSize'), 'NarSize'),
    references,
    deriver: deriver === undefined || deriver === 'unknown-deriver' ? null : basename(deriver, 'Deriver'),
    ca: fields.get('CA') ?? null,
    sigs,
  }
}

export function formatNarInfo(info: NarInfo): string {
  const lines = [
    `StorePath: ${info.storePath}`,
    `URL: ${info.url}`,
    `Compression: ${info.compression}`,
    ...(info.fileHash !== null ? [`FileHash: ${info.fileHash}`] : []),
    ...(info.fileSize !== null ? [`FileSize: ${info.fileSize}`] : []),
    `NarHash: ${info.narHash}`,
    `NarSize: ${info.narSize}`,
    `References: ${info.references.join(' ')}`,
    ...(info.deriver !== null ? [`Deriver: ${info.deriver}`] : []),
    ...info.sigs.map((s) => `Sig: ${s}`),
    ...(info.ca !== null ? [`CA: ${info.ca}`] : []),
  ]
  return `${lines.join('\n')}\n`
}

/** The bytes a Nix signature covers, computed as Nix does (`ValidPathInfo::fingerprint`). */
export function narInfoFingerprint(
  info: Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>,
): Uint8Array {
  const refs = info.references.map((r) => `${STORE_DIR}/${r}`).sort()
  const narHash =
    info.narHash.startsWith('sha256:') && info.narHash.length === 7 + 52
      ? info.narHash
      : nixSha256(sha256HexOfNixHash(info.narHash))
  return utf8.encode(`1;${info.storePath};${narHash};${info.narSize};${refs.join(',')}`)
}

/** The narinfo with `key`'s signature added (replacing an older one by the same key name). */
export function signNarInfo(info: NarInfo, key: NixSigningKey): NarInfo {
  const sig = `${key.name}:${Buffer.from(key.sign(narInfoFingerprint(info))).toString('base64')}`
  return { ...info, sigs: [...info.sigs.filter((s) => !s.startsWith(`${key.name}:`)), sig] }
}

export type SignatureCheck = { ok: true; key: NixPublicKey } | { ok: false; reason: string }

/** Whether one of the narinfo's signatures is by one of `trusted`, and if not, why not. */
export function checkNarInfoSignature(info: NarInfo, trusted: readonly NixPublicKey[]): SignatureCheck {
  if (info.sigs.length === 0) return { ok: false, reason: `${info.storePath} is not signed` }
  const fingerprint = narInfoFingerprint(info)
  const names: string[] = []
  for (const sig of info.sigs) {
    const colon = sig.indexOf(':')
    const name = sig.slice(0, colon)
    names.push(name)
    const key = trusted.find((k) => k.name === name)
    if (key === undefined) continue
    let signature: Uint8Array
    try {
      signature = fromBase64(sig.slice(colon + 1))
    } catch {
      continue
    }
    if (key.verify(fingerprint, signature)) return { ok: true, key }
    return { ok: false, reason: `${info.storePath}: the signature by "${name}" does not match its contents` }
  }
  return {
    ok: false,
    reason: `${info.storePath} is signed only by [${names.join(', ')}], none of which the manifest trusts ([${trusted.map((k) => k.name).join(', ')}])`,
  }
}
