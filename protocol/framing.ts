/**
 * Length-prefixed frames over a libp2p v3 stream.
 *
 * A frame is a 4-byte big-endian unsigned length followed by that many bytes.
 * Each end enforces a hard maximum frame size: an incoming prefix above it
 * resets the stream with a {@link FrameTooLargeError} before any payload is
 * buffered, and is counted; an undecodable frame (the handler throws
 * {@link FrameDecodeError}) resets only its stream. Nothing here can take the
 * process or the connection down.
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
 *
 * // client
 * const fs = new FramedStream(await host.dialProtocol(peer, '/fleetmesh/control/1'))
 * await fs.send(request)
 * const response = await fs.readOne({ timeoutMs: 10_000 })
 * await fs.close()
 * ```
 */

import type {
  AbortOptions,
  Connection,
  Libp2p,
  Stream,
  StreamCloseEvent,
  StreamMessageEvent,
} from '@libp2p/interface'
import { StreamAbortedError, StreamResetError, StreamStateError } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { raceSignal } from '../lib/index.ts'
import { FrameDecodeError, FrameTooLargeError, UnexpectedEndOfStreamError } from './errors.ts'

/** Default hard maximum payload size of one frame: 1 MiB */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

/** Size of the big-endian length prefix in bytes */
export const FRAME_PREFIX_BYTES = 4

/** The largest payload a 4-byte prefix can announce */
const MAX_ENCODABLE_FRAME_BYTES = 0xffff_ffff

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

function checkMaxFrameBytes(max: number): number {
  if (!Number.isSafeInteger(max) || max < 0 || max > MAX_ENCODABLE_FRAME_BYTES) {
    throw new RangeError(
      `maxFrameBytes must be an integer between 0 and ${MAX_ENCODABLE_FRAME_BYTES} (a 4-byte prefix), got ${max}`,
    )
  }
  return max
}

/** Encode the 4-byte big-endian length prefix for a payload of `size` bytes */
export function encodeFramePrefix(size: number): Uint8Array {
  const prefix = new Uint8Array(FRAME_PREFIX_BYTES)
  new DataView(prefix.buffer).setUint32(0, size, false)
  return prefix
}

/**
 * The pure, transport-free part of framing: feed it chunks as they arrive,
 * take whole frames out.
 *
 * Buffers at most one frame (prefix included) plus whatever part of the next
 * one arrived in the same chunk; rejects a prefix above the maximum as soon as
 * its 4 bytes are present, before any of the payload is kept. Frames are views
 * into the received chunks where a frame did not span chunks (no copy), and a
 * single copy otherwise, so reassembly is linear in the bytes received.
 */
export class FrameDecoder {
  readonly maxFrameBytes: number
  readonly #buffer = new Uint8ArrayList()
  /** Payload length of the frame at the head of the buffer, or -1 until its prefix has arrived */
  #payloadBytes = -1
  #failure: FrameTooLargeError | undefined

  constructor(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    this.maxFrameBytes = checkMaxFrameBytes(maxFrameBytes)
  }

  /** Bytes received but not yet returned as frames */
  get bufferedBytes(): number {
    return this.#buffer.byteLength
  }

  push(chunk: Uint8Array | Uint8ArrayList): void {
    if (this.#failure !== undefined || chunk.byteLength === 0) return
    this.#buffer.append(chunk)
  }

  /**
   * The next whole frame, or undefined until more bytes arrive.
   *
   * @throws {FrameTooLargeError} when the next prefix exceeds the maximum; the decoder stays failed
   */
  next(): Uint8Array | undefined {
    if (this.#failure !== undefined) throw this.#failure

    if (this.#payloadBytes < 0) {
      if (this.#buffer.byteLength < FRAME_PREFIX_BYTES) return undefined
      const size = this.#buffer.getUint32(0, false)
      if (size > this.maxFrameBytes) {
        this.#failure = new FrameTooLargeError(size, this.maxFrameBytes, 'inbound')
        this.#buffer.consume(this.#buffer.byteLength)
        throw this.#failure
      }
      this.#payloadBytes = size
    }

    const frameBytes = FRAME_PREFIX_BYTES + this.#payloadBytes
    if (this.#buffer.byteLength < frameBytes) return undefined

    const frame =
      this.#payloadBytes === 0 ? new Uint8Array(0) : this.#buffer.subarray(FRAME_PREFIX_BYTES, frameBytes)
    this.#buffer.consume(frameBytes)
    this.#payloadBytes = -1
    return frame
  }

  /**
   * Declare that no more bytes will arrive.
   *
   * @throws {UnexpectedEndOfStreamError} when a partial frame is buffered
   */
  end(): void {
    if (this.#failure !== undefined) throw this.#failure
    const buffered = this.#buffer.byteLength
    if (buffered === 0) return
    const expected = this.#payloadBytes < 0 ? undefined : FRAME_PREFIX_BYTES + this.#payloadBytes
    this.#buffer.consume(buffered)
    this.#payloadBytes = -1
    throw new UnexpectedEndOfStreamError(buffered, expected)
  }
}

export interface FramedStreamInit {
  /**
   * Largest frame payload accepted or sent, in bytes.
   *
   * @default DEFAULT_MAX_FRAME_BYTES (1 MiB)
   */
  maxFrameBytes?: number

  /** Where oversized and truncated frames detected by this stream are counted */
  counters?: FrameErrorCounters
}

export interface ReadFrameOptions extends AbortOptions {
  /** Give up after this many ms; the read rejects with the signal's TimeoutError */
  timeoutMs?: number
}

function readSignal(options: ReadFrameOptions | undefined): AbortSignal | undefined {
  const signals: AbortSignal[] = []
  if (options?.signal != null) signals.push(options.signal)
  if (options?.timeoutMs !== undefined) signals.push(AbortSignal.timeout(options.timeoutMs))
  if (signals.length < 2) return signals[0]
  return AbortSignal.any(signals)
}

/**
 * Waits for the stream's 'drain' event.
 *
 * `stream.onDrain()` is not used on purpose: in @libp2p/utils 7 it caches one
 * promise per stream and never replaces it after the first drain, so every
 * later call resolves at once and backpressure silently stops working.
 */
function waitForDrain(stream: Stream, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const onDrain = (): void => {
      cleanup()
      resolve()
    }
    const onClose = (evt: StreamCloseEvent): void => {
      cleanup()
      reject(evt.error ?? new StreamStateError('stream closed while a frame was waiting to be sent'))
    }
    const onAbort = (): void => {
      cleanup()
      reject(signal?.reason)
    }
    if (signal?.aborted === true) {
      reject(signal.reason)
      return
    }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * A libp2p stream carrying length-prefixed frames.
 *
 * Reading is pull-based: while nobody is waiting for a frame the underlying
 * stream is paused, which for yamux withholds window updates so the peer
 * stops sending. A paused libp2p stream resets itself once its read buffer
 * passes `maxReadBufferLength` (4 MiB), so the muxer's receive window must
 * not be larger; hosts from `createHost` cap it accordingly.
 *
 * One reader at a time (`frames()`, `read()` or `readOne()`); sends may be
 * concurrent and are never interleaved.
 */
export class FramedStream implements AsyncIterable<Uint8Array> {
  readonly stream: Stream
  readonly maxFrameBytes: number
  readonly counters: FrameErrorCounters | undefined
  readonly #decoder: FrameDecoder
  #failure: Error | undefined
  #wake: PromiseWithResolvers<void> | undefined
  #reading = false

  constructor(stream: Stream, init: FramedStreamInit = {}) {
    this.stream = stream
    this.maxFrameBytes = checkMaxFrameBytes(init.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES)
    this.counters = init.counters
    this.#decoder = new FrameDecoder(this.maxFrameBytes)

    stream.addEventListener('message', this.#onMessage)
    stream.addEventListener('close', this.#onClose)
    stream.addEventListener('remoteCloseWrite', this.#onWake)
    stream.addEventListener('end', this.#onWake)
  }

  /** The error that ended this stream (ours or the peer's), if it ended abnormally */
  get failure(): Error | undefined {
    return this.#failure ?? this.#statusError()
  }

  /**
   * Send one frame, waiting while the stream applies backpressure.
   *
   * @throws {FrameTooLargeError} when the frame exceeds `maxFrameBytes`; the stream is left intact
   */
  async send(frame: Uint8Array | Uint8ArrayList, options?: AbortOptions): Promise<void> {
    const size = frame.byteLength
    if (size > this.maxFrameBytes) throw new FrameTooLargeError(size, this.maxFrameBytes, 'outbound')
    options?.signal?.throwIfAborted()

    const failure = this.failure
    if (failure !== undefined) throw failure

    // a concurrent sender may have filled the buffer; queueing more behind it
    // would defeat backpressure
    while (this.stream.writableNeedsDrain) await waitForDrain(this.stream, options?.signal)

    // one send() call per frame keeps concurrent senders from interleaving
    const canSendMore = this.stream.send(new Uint8ArrayList(encodeFramePrefix(size), frame))
    if (!canSendMore) await waitForDrain(this.stream, options?.signal)
  }

  /**
   * The next frame, or undefined when the peer closed its writable end cleanly
   * between frames.
   *
   * @throws {FrameTooLargeError} the peer announced an oversized frame; the stream has been reset
   * @throws {UnexpectedEndOfStreamError} the peer closed in the middle of a frame
   * @throws the stream's error (e.g. StreamResetError) if it was reset
   */
  async read(options?: ReadFrameOptions): Promise<Uint8Array | undefined> {
    if (this.#reading) {
      throw new Error('FramedStream already has a read in progress; await it before reading again')
    }
    this.#reading = true
    try {
      return await this.#next(readSignal(options))
    } finally {
      this.#reading = false
    }
  }

  /**
   * Read exactly one frame, for request/response exchanges.
   *
   * @throws {UnexpectedEndOfStreamError} the peer closed before sending a frame
   */
  async readOne(options?: ReadFrameOptions): Promise<Uint8Array> {
    const frame = await this.read(options)
    if (frame === undefined) {
      const err = new UnexpectedEndOfStreamError(0)
      this.counters?.record(err)
      throw err
    }
    return frame
  }

  /** Yields frames until the peer closes its writable end */
  async *frames(options?: AbortOptions): AsyncGenerator<Uint8Array, void, undefined> {
    while (true) {
      const frame = await this.read(options)
      if (frame === undefined) return
      yield frame
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return this.frames()
  }

  /** Close our writable end once queued frames are flushed; the peer may keep sending */
  async close(options?: AbortOptions): Promise<void> {
    await this.stream.close(options)
  }

  /** Reset the stream: both directions stop at once and the peer sees a reset */
  abort(err: Error): void {
    this.#failure ??= err
    this.stream.abort(err)
    this.#onWake()
  }

  async #next(signal: AbortSignal | undefined): Promise<Uint8Array | undefined> {
    while (true) {
      const failure = this.failure
      if (failure !== undefined) throw failure

      let frame: Uint8Array | undefined
      try {
        frame = this.#decoder.next()
      } catch (err) {
        if (err instanceof FrameTooLargeError) {
          this.counters?.record(err)
          this.abort(err)
        }
        throw err
      }
      if (frame !== undefined) return frame

      if (this.stream.readableEnded) {
        try {
          this.#decoder.end()
        } catch (err) {
          // keep failing: the partial frame is gone, so a later read must not report a clean end
          if (err instanceof Error) this.#failure = err
          this.counters?.record(err)
          throw err
        }
        return undefined
      }

      const wake = Promise.withResolvers<void>()
      this.#wake = wake
      try {
        // resuming may deliver buffered bytes synchronously, which resolves `wake`
        if (this.stream.readStatus === 'paused') this.stream.resume()
        await raceSignal(wake.promise, signal)
      } finally {
        this.#wake = undefined
      }
    }
  }

  #statusError(): Error | undefined {
    // a reset emits 'end' before 'close', so the status can be terminal before
    // the close event has delivered its error
    if (this.stream.status === 'reset') return new StreamResetError('the peer reset the stream')
    if (this.stream.status === 'aborted') return new StreamAbortedError('the stream was aborted locally')
    return undefined
  }

  readonly #onMessage = (evt: StreamMessageEvent): void => {
    this.#decoder.push(evt.data)
    if (this.#wake !== undefined) {
      this.#wake.resolve()
    } else if (this.stream.readStatus === 'readable') {
      // nobody is reading: stop the flow until someone asks for a frame
      this.stream.pause()
    }
  }

  readonly #onClose = (evt: StreamCloseEvent): void => {
    if (evt.error !== undefined) this.#failure ??= evt.error
    this.#onWake()
  }

  readonly #onWake = (): void => {
    this.#wake?.resolve()
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
      const fs = new FramedStream(stream, { maxFrameBytes, counters })
      try {
        await handler(fs, connection)
        await fs.close()
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
