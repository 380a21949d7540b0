/**
 * The standby link. An agent of a fleet with several coordinators holds, beside
 * its control link, a connection to the coordinator it would fail over to, kept
 * by one quiet stream of `PROTOCOLS.standby`. When its coordinator dies, the
 * control link opens on that connection at once: the dial, the Noise handshake
 * and identify, most of what a coordinator spends on an arriving agent, were
 * paid long before, not by every agent of the dead coordinator in the same
 * seconds.
 *
 * The agent sends a `standby` frame first and again every STANDBY_PING_MS. The
 * coordinator answers the first with a `standby` frame of its own once it has
 * checked that the peer is an enrolled machine (it resets the stream of any
 * other peer), then sends nothing more, and drops a standby stream that stays
 * silent for STANDBY_SILENCE_MS (an agent that vanished must not hold a
 * connection there for ever: the coordinator runs no connection monitor).
 */
import { z } from 'zod'

export const STANDBY_PING_MS = 20_000
export const STANDBY_SILENCE_MS = 3 * STANDBY_PING_MS
/** A standby frame is a few bytes; anything larger is refused. */
export const MAX_STANDBY_FRAME_BYTES = 64

export const standbyFrameSchema = z.strictObject({ t: z.literal('standby') })
export type StandbyFrame = z.infer<typeof standbyFrameSchema>
