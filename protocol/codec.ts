/**
 * Encoding and validating messages: canonical CBOR plus a schema. Decode failures
 * become a typed MessageDecodeError that names the offending field's path, which
 * framed-protocol handlers turn into a reset of that one stream.
 */
import type { z } from 'zod'
import { decodeCanonical, encodeCanonical } from '../keys/index.ts'
import { describeIssues } from '../lib/index.ts'

export class MessageDecodeError extends Error {
  override name = 'MessageDecodeError'
  readonly what: string
  constructor(what: string, message: string, options?: ErrorOptions) {
    super(`invalid ${what}: ${message}`, options)
    this.what = what
  }
}

export function encodeMessage<S extends z.ZodType>(schema: S, value: z.input<S>): Uint8Array {
  // Validate on the way out too: a bug here would otherwise surface as a remote's rejection.
  const checked = schema.safeParse(value)
  if (!checked.success) throw new MessageDecodeError('outgoing message', describeIssues(checked.error))
  return encodeCanonical(value)
}

export function decodeMessage<S extends z.ZodType>(
  schema: S,
  bytes: Uint8Array,
  what: string,
  maxBytes: number,
  options: { canonical?: boolean } = {},
): z.output<S> {
  let value: unknown
  try {
    value = decodeCanonical(bytes, maxBytes, options)
  } catch (err) {
    throw new MessageDecodeError(what, (err as Error).message, { cause: err })
  }
  const parsed = schema.safeParse(value)
  if (!parsed.success) throw new MessageDecodeError(what, describeIssues(parsed.error))
  return parsed.data
}
