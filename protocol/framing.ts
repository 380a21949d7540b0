/**
 * Length-prefixed frames over a libp2p v3 stream: serving a protocol with them.
 *
 * A frame is a 4-byte big-endian unsigned length followed by that many bytes
 * (frame-decoder.ts); {@link FramedStream} (framed-stream.ts) carries them on
 * one stream. Each end enforces a hard maximum frame size: an incoming prefix
 * above it resets the stream with a {@link FrameTooLargeError} before any
 * payload is buffered, and is counted in {@link FrameErrorCounters}; an
 * undecodable frame (the handler throws {@link FrameDecodeError}) resets only
 * its stream. Nothing here can take the process or the connection down.
 *
 * @example Serve a request/response protocol
 *
 * ```ts
 * const counters = new FrameErrorCounters()
 * await handleFramed(host, '/fleetmesh/control/1', async (fs, connection) => {
 *   for await (const frame of fs) {
 *     const msg = decode(frame) // throw FrameDecodeError when it does not decode
 *     await fs.send(encode(reply(msg)))
 *   }
 * }, { counters })
 * ```
 */

import type { Connection, Libp2p } from '@libp2p/interface'
import { StreamResetError } from '@libp2p/interface'
import { FrameDecodeError, FrameTooLargeError, UnexpectedEndOfStreamError } from './errors.ts'
import { checkMaxFrameBytes, DEFAULT_MAX_FRAME_BYTES } from './frame-decoder.ts'
import { FramedStream, type FramedStreamInit } from './framed-stream.ts'

/**
 * What went wrong on a framed stream:
 * - `oversized`: a length prefix above the maximum (or an attempt to send one)
 * - `decode`: a whole frame arrived but its contents did not decode/validate
 * - `truncated`: the peer closed mid-frame, or before an expected frame
 * - `reset`: the peer reset the stream
 * - `other`: anything else a handler threw (timeouts, application errors)
 */
export type FrameErrorKind = 'oversized' | 'decode' | 'truncated' | 'reset' | 'other'

export type FrameErrorSnapshot = Readonly<Record<FrameErrorKind, number>>

/**
 * Counts framed-stream failures by kind, for metrics.
 *
 * `record` is idempotent per error object, so the layer that detects an
 * error and the layer that finally handles it can both report it without
 * counting it twice.
 */
export class FrameErrorCounters {
  readonly #counts: Record<FrameErrorKind, number> = {
    oversized: 0,
    decode: 0,
    truncated: 0,
    reset: 0,
    other: 0,
  }
  readonly #seen = new WeakSet<Error>()

  /** Which counter an error belongs to; matches on `name` so copies of the classes still classify */
  static classify(err: unknown): FrameErrorKind {
    const name = err instanceof Error ? err.name : undefined
    switch (name) {
      case FrameTooLargeError.name:
        return 'oversized'
      case FrameDecodeError.name:
      // message-level failures from protocol/codec.ts and protocol/envelope.ts,
      // matched by name so framing does not import the message layer
      case 'MessageDecodeError':
      case 'EnvelopeError':
        return 'decode'
      case UnexpectedEndOfStreamError.name:
        return 'truncated'
      case StreamResetError.name:
        return 'reset'
      default:
        return 'other'
    }
  }

  /** Count `err` once under its kind and return the kind */
  record(err: unknown): FrameErrorKind {
    const kind = FrameErrorCounters.classify(err)
    if (err instanceof Error) {
      if (this.#seen.has(err)) return kind
      this.#seen.add(err)
    }
    this.#counts[kind]++
    return kind
  }

  increment(kind: FrameErrorKind, by = 1): void {
    this.#counts[kind] += by
  }

  get(kind: FrameErrorKind): number {
    return this.#counts[kind]
  }

  snapshot(): FrameErrorSnapshot {
    return Object.freeze({ ...this.#counts })
  }
}

export interface HandleFramedInit extends FramedStreamInit {
  /** Concurrent inbound streams of this protocol per connection (libp2p default 32) */
  maxInboundStreams?: number
  /** Concurrent outbound streams of this protocol per connection (libp2p default 64) */
  maxOutboundStreams?: number
  /**
   * Accept streams on relayed (limited) connections.
   *
   * Defaults to true, unlike libp2p: an agent behind CGNAT may only ever be
   * reachable through the operator's relay, and fleetmesh relays are
   * configured with limits generous enough for control traffic.
   *
   * @default true
   */
  runOnLimitedConnection?: boolean
  /** See {@link hangUp}. @default 5000 */
  hangUpGraceMs?: number
}

/** How long a peer may keep its side of a stream open after the handler is done with it. */
export const DEFAULT_HANG_UP_GRACE_MS = 5_000

/**
 * Closes our side, then waits up to `graceMs` for the peer to close theirs
 * (discarding anything it still sends) and resets the stream if it does not:
 * a peer that never closes would otherwise hold the stream, and with it the
 * connection, open for good (an idle connection has no streams).
 */
export async function hangUp(fs: FramedStream, graceMs: number): Promise<void> {
  await fs.close()
  const signal = AbortSignal.timeout(graceMs)
  while ((await fs.read({ signal }).catch(() => undefined)) !== undefined) {}
  if (signal.aborted)
    fs.abort(new Error(`peer kept its side of the stream open ${graceMs} ms after the answer`))
}

export type FramedHandler = (fs: FramedStream, connection: Connection) => Promise<void>

/**
 * Register `handler` for `protocol` on `host`, with every stream wrapped in a
 * {@link FramedStream}.
 *
 * Whatever the handler throws (or a frame-level error it lets through) is
 * caught, counted in `init.counters`, logged at debug level under
 * `fleetmesh:framing`, and resets only that stream. When the handler returns,
 * the writable end is closed after pending frames are flushed.
 */
export async function handleFramed(
  host: Pick<Libp2p, 'handle' | 'logger'>,
  protocol: string,
  handler: FramedHandler,
  init: HandleFramedInit = {},
): Promise<void> {
  const log = host.logger.forComponent('fleetmesh:framing')
  const maxFrameBytes = checkMaxFrameBytes(init.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES)
  const counters = init.counters

  await host.handle(
    protocol,
    async (stream, connection) => {
      const fs = new FramedStream(stream, {
        maxFrameBytes,
        ...(init.maxSendFrameBytes === undefined ? {} : { maxSendFrameBytes: init.maxSendFrameBytes }),
        counters,
      })
      try {
        await handler(fs, connection)
        await hangUp(fs, init.hangUpGraceMs ?? DEFAULT_HANG_UP_GRACE_MS)
      } catch (thrown) {
        const err = thrown instanceof Error ? thrown : new Error(`non-Error thrown: ${String(thrown)}`)
        const kind = counters?.record(err) ?? FrameErrorCounters.classify(err)
        log(
          '%s stream %s from %p reset after %s error - %e',
          protocol,
          stream.id,
          connection.remotePeer,
          kind,
          err,
        )
        fs.abort(err)
      }
    },
    {
      maxInboundStreams: init.maxInboundStreams,
      maxOutboundStreams: init.maxOutboundStreams,
      runOnLimitedConnection: init.runOnLimitedConnection ?? true,
    },
  )
}
