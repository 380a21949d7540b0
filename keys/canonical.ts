/**
 * Deterministic CBOR for everything that is signed.
 *
 * cborg's encoder is deterministic (RFC 8949 §4.2 core rules: shortest integers,
 * sorted map keys, definite lengths). The decoder is strict, and additionally
 * re-encodes and compares, so a value has exactly one accepted byte form: a peer
 * cannot make two different byte strings that decode to the same message.
 */
import { decode, encode } from 'cborg'
import { bytesEqual } from '../lib/index.ts'
import { EncodingError } from './errors.ts'

const DECODE_OPTIONS = {
  strict: true,
  rejectDuplicateMapKeys: true,
  allowUndefined: false,
  allowIndefinite: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
  useMaps: false,
  retainStringBytes: false,
  tags: [],
}

/** Nested depth is bounded so hostile input cannot exhaust the stack. */
const MAX_DEPTH = 32

export function encodeCanonical(value: unknown): Uint8Array {
  try {
    return encode(value, { float64: true })
  } catch (err) {
    throw new EncodingError(`cannot encode value canonically: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * `canonical: false` skips the re-encode comparison; only for unsigned containers
 * (the envelope around a signed payload), whose byte form nobody signs or hashes.
 */
export function decodeCanonical(
  bytes: Uint8Array,
  maxBytes: number,
  options: { canonical?: boolean } = {},
): unknown {
  if (bytes.byteLength > maxBytes) {
    throw new EncodingError(
      `encoded value is ${bytes.byteLength} bytes, more than the ${maxBytes}-byte limit`,
    )
  }
  let value: unknown
  try {
    value = decode(bytes, DECODE_OPTIONS)
  } catch (err) {
    throw new EncodingError(`not valid CBOR: ${(err as Error).message}`, { cause: err })
  }
  if (depth(value, 0) > MAX_DEPTH) {
    throw new EncodingError(`value nests deeper than ${MAX_DEPTH} levels`)
  }
  if (options.canonical !== false && !bytesEqual(encodeCanonical(value), bytes)) {
    throw new EncodingError('CBOR is not in canonical form (sorted keys, shortest lengths, float64 numbers)')
  }
  return value
}

function depth(value: unknown, level: number): number {
  if (level > MAX_DEPTH) return level
  if (value instanceof Uint8Array || value === null || typeof value !== 'object') return level
  let max = level
  for (const child of Array.isArray(value) ? value : Object.values(value)) {
    const d = depth(child, level + 1)
    if (d > max) max = d
  }
  return max
}
