/** Field schemas shared by certificates, tokens and (re-exported) protocol messages. */
import { z } from 'zod'

export const bytes = (length?: number) =>
  z
    .custom<Uint8Array>((v) => v instanceof Uint8Array, { message: 'expected a byte string' })
    .refine((b) => length === undefined || b.byteLength === length, { message: `expected ${length} bytes` })

export const publicKeyBytes = bytes(32)
export const signatureBytes = bytes(64)

/** Machine names double as hostnames and file names, so keep them to a safe alphabet. */
export const machineName = z
  .string()
  .min(1)
  .max(63)
  .regex(
    /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/,
    'lowercase letters, digits and inner hyphens (like a hostname label)',
  )

export const tagName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'lowercase letters, digits, "-", "_" and "."')

export const timestampMs = z.number().int().nonnegative().max(8_640_000_000_000_000)
