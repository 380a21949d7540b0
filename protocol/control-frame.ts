/**
 * Decoding control frames so that a newer peer's message types do not break
 * the link: a frame whose `t` this version does not know is reported as such
 * and skipped by the reader, instead of failing validation and resetting the
 * stream. Mixed versions meet on every rolling upgrade, and the control stream
 * is what carries the upgrade. A frame of a known type that does not validate
 * is still an error.
 */
import { z } from 'zod'
import { decodeCanonical } from '../keys/index.ts'
import { describeIssues } from '../lib/index.ts'
import { MessageDecodeError } from './codec.ts'
import { type ControlFrame, controlFrameSchema } from './messages.ts'

const KNOWN_TYPES: ReadonlySet<string> = new Set(controlFrameSchema.options.map((o) => o.shape.t.value))

/** Any frame's outline: a map with a type name. */
const outline = z.looseObject({ t: z.string().max(64) })

/** A frame of a type this version does not know, named by its `t`. */
export interface UnknownControlFrame {
  unknown: string
}

export function decodeControlFrame(bytes: Uint8Array, maxBytes: number): ControlFrame | UnknownControlFrame {
  let value: unknown
  try {
    value = decodeCanonical(bytes, maxBytes)
  } catch (err) {
    throw new MessageDecodeError('control frame', (err as Error).message, { cause: err })
  }
  const typed = outline.safeParse(value)
  if (typed.success && !KNOWN_TYPES.has(typed.data.t)) return { unknown: typed.data.t }
  const parsed = controlFrameSchema.safeParse(value)
  if (!parsed.success) throw new MessageDecodeError('control frame', describeIssues(parsed.error))
  return parsed.data
}

export function isUnknownFrame(frame: ControlFrame | UnknownControlFrame): frame is UnknownControlFrame {
  return 'unknown' in frame
}
