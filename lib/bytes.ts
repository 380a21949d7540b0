/** Small byte helpers shared by every layer; kept here so no module needs Buffer at its boundary. */

/** A string with one character per byte, for keying a Map by bytes (no copy of them is made). */
export function bytesKey(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')
}

export function toBase64Url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url')
}

const BASE64URL = /^[A-Za-z0-9_-]*$/

/**
 * Strict base64url decode: one text for one byte string. Buffer.from silently
 * skips bad characters and ignores the unused low bits of the last character,
 * so a typo, or a changed last character of a token, would decode to the same
 * bytes. Only the canonical form (what toBase64Url makes: no padding, unused
 * bits zero) is accepted.
 */
export function fromBase64Url(text: string): Uint8Array {
  if (!BASE64URL.test(text) || text.length % 4 === 1) {
    throw new TypeError('not valid base64url text')
  }
  const bytes = new Uint8Array(Buffer.from(text, 'base64url'))
  if (toBase64Url(bytes) !== text) throw new TypeError('not canonical base64url text (unused bits set)')
  return bytes
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  let diff = 0
  for (let i = 0; i < a.byteLength; i++) diff |= (a[i] as number) ^ (b[i] as number)
  return diff === 0
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0
  for (const p of parts) length += p.byteLength
  const out = new Uint8Array(length)
  let offset = 0
  for (const p of parts) {
    out.set(p, offset)
    offset += p.byteLength
  }
  return out
}

export const utf8 = new TextEncoder()

export const toBase64 = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')

export const fromBase64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'))
