/**
 * Nix's base32: the alphabet without e, o, u and t, and the bytes read from the
 * end. Store path hashes and `sha256:` hashes in narinfo files use it, so the
 * agent and the admin need it to match what Nix writes, bit for bit.
 */
const ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'

export function nixBase32Length(bytes: number): number {
  return Math.ceil((bytes * 8) / 5)
}

export function toNixBase32(bytes: Uint8Array): string {
  const length = nixBase32Length(bytes.byteLength)
  let out = ''
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5
    const i = bit >> 3
    const j = bit & 7
    const lo = (bytes[i] as number) >> j
    const hi = i + 1 < bytes.byteLength ? (bytes[i + 1] as number) << (8 - j) : 0
    out += ALPHABET[(lo | hi) & 0x1f]
  }
  return out
}

/** Decodes `text` into `bytes` bytes; throws a TypeError naming the problem on bad input. */
export function fromNixBase32(text: string, bytes: number): Uint8Array {
  if (text.length !== nixBase32Length(bytes))
    throw new TypeError(`expected ${nixBase32Length(bytes)} Nix base32 characters, got ${text.length}`)
  const out = new Uint8Array(bytes)
  for (let n = 0; n < text.length; n++) {
    const digit = ALPHABET.indexOf(text[text.length - 1 - n] as string)
    if (digit < 0) throw new TypeError(`"${text[text.length - 1 - n]}" is not a Nix base32 character`)
    const bit = n * 5
    const i = bit >> 3
    const j = bit & 7
    out[i] = (out[i] as number) | ((digit << j) & 0xff)
    const carry = digit >> (8 - j)
    if (i + 1 < bytes) out[i + 1] = (out[i + 1] as number) | carry
    else if (carry !== 0) throw new TypeError('Nix base32 text encodes more bits than fit')
  }
  return out
}
