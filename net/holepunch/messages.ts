/**
 * The coordination protocol `/fleetmesh/holepunch/1`, run on a relayed
 * (limited) connection before punching:
 *
 * ```
 * initiator                          responder
 *   CONNECT {nat, observed} ───────►
 *                           ◄─────── CONNECT {nat, observed} | REFUSE {reason}
 *   SYNC | ABORT {reason}  ─────────►   (punches as soon as SYNC arrives)
 *   waits RTT/2, punches
 * ```
 *
 * The initiator measures the round trip of the CONNECT exchange and delays
 * its first SYN by half of it, so both SYNs leave at about the same time (as
 * DCUtR does). Messages are canonical CBOR, one per frame, validated here; a
 * frame above {@link MAX_HOLEPUNCH_MESSAGE_BYTES} resets the stream.
 */

import { z } from 'zod'
import { decodeMessage } from '../../protocol/index.ts'
import { NAT_KINDS } from './nat.ts'

export const HOLEPUNCH_PROTOCOL = '/fleetmesh/holepunch/1'

/** The largest message is a CONNECT with four endpoints: ~150 bytes */
export const MAX_HOLEPUNCH_MESSAGE_BYTES = 1024

const endpoint = z.strictObject({
  address: z.ipv4(),
  port: z.number().int().min(1).max(65_535),
})

const natKind = z.enum(NAT_KINDS)
const detail = z.string().max(256)

const connect = z.strictObject({
  type: z.literal('connect'),
  nat: natKind,
  /**
   * Where to reach the sender, best first: the observed endpoint (the only one
   * older versions send or read), then up to three LAN candidates (candidates.ts)
   */
  observed: z.array(endpoint).min(1).max(4),
})

const refuse = z.strictObject({
  type: z.literal('refuse'),
  reason: z.enum(['disabled', 'busy', 'no-observation', 'symmetric-nat']),
  detail,
})

const sync = z.strictObject({ type: z.literal('sync') })

const abort = z.strictObject({
  type: z.literal('abort'),
  reason: z.enum(['symmetric-nat']),
  detail,
})

export const connectSchema = connect
export const replySchema = z.discriminatedUnion('type', [connect, refuse])
export const decisionSchema = z.discriminatedUnion('type', [sync, abort])

export type ConnectMessage = z.infer<typeof connect>
export type ReplyMessage = z.infer<typeof replySchema>
export type DecisionMessage = z.infer<typeof decisionSchema>

/** @throws {MessageDecodeError} when `frame` is not a valid `what` (the stream is then reset) */
export function decodeHolePunch<S extends z.ZodType>(
  schema: S,
  frame: Uint8Array,
  what: string,
): z.output<S> {
  return decodeMessage(schema, frame, `holepunch ${what}`, MAX_HOLEPUNCH_MESSAGE_BYTES)
}
