/**
 * The update log on the wire: its bound, and the `update-log` control frame
 * that carries a running update's output live (`fleetmesh logs <machine>
 * --follow`). An agent sends the frames only to a coordinator whose hello names
 * UPDATE_LOG_CAPABILITY; they are not durable (a chunk lost to a disconnect is
 * a gap in the live tail), because the final status report carries the log's
 * tail durably. `offset` is the byte offset of `text` in the update's live log,
 * which holds at most MAX_REPORT_LOG bytes: the agent drops lines beyond it and
 * says how many bytes it dropped.
 */
import { z } from 'zod'

/** The update log a status report carries (its tail), and the most a live log of one update holds. */
export const MAX_REPORT_LOG = 16 * 1024
/** The capability a coordinator's hello names when it takes `update-log` frames. */
export const UPDATE_LOG_CAPABILITY = 'update-log'
/** The most output, in UTF-8 bytes, one `update-log` frame carries. */
export const MAX_UPDATE_LOG_CHUNK = 8 * 1024

/** Bytes of `text` in UTF-8, as offsets in a live log count them. */
export function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8')
}

/** One chunk of a live log: at most MAX_UPDATE_LOG_CHUNK bytes. */
export const updateLogText = z
  .string()
  .min(1)
  .max(MAX_UPDATE_LOG_CHUNK)
  .refine((t) => utf8Length(t) <= MAX_UPDATE_LOG_CHUNK, {
    message: `at most ${MAX_UPDATE_LOG_CHUNK} bytes of UTF-8`,
  })

/** A chunk that would end past MAX_REPORT_LOG is refused like any malformed frame. */
export const updateLogFrame = z
  .strictObject({
    t: z.literal('update-log'),
    manifestId: z.string().regex(/^[0-9a-f]{32}$/, '32 lowercase hex digits'),
    offset: z.number().int().nonnegative().max(MAX_REPORT_LOG),
    text: updateLogText,
  })
  .refine((f) => f.offset + utf8Length(f.text) <= MAX_REPORT_LOG, {
    message: `the live log of an update holds at most ${MAX_REPORT_LOG} bytes`,
    path: ['text'],
  })
export type UpdateLogFrame = z.infer<typeof updateLogFrame>
