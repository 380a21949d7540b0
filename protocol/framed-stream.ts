/**
 * {@link FramedStream}: a libp2p v3 stream carrying length-prefixed frames,
 * with pull-based reading (backpressure reaches the peer through yamux),
 * sends that never interleave, and frame-level failures counted by kind.
 *
 * @example Request/response as a client
 *
 * ```ts
 * const fs = new FramedStream(await host.dialProtocol(peer, '/fleetmesh/control/1'))
 * await fs.send(request)
 * const response = await fs.readOne({ timeoutMs: 10_000 })
 * await fs.close()
 * ```
 */
import type { AbortOptions, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { StreamAbortedError, StreamResetError, StreamStateError } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { raceSignal } from '../lib/index.ts'
import { FrameTooLargeError, UnexpectedEndOfStreamError } from './errors.ts'
import {
  checkMaxFrameBytes,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFramePrefix,
  FrameDecoder,
} from './frame-decoder.ts'
import type { FrameErrorCounters } from './framing.ts'

export interface FramedStreamInit {
  /**
   * Largest frame payload accepted or sent, in bytes.
   *
   * @default DEFAULT_MAX_FRAME_BYTES (1 MiB)
   */
  maxFrameBytes?: number

  /**
   * Largest frame payload sent, in bytes, when it differs from what is
   * accepted: a server whose answers outgrow its requests (the coordinator's
   * admin results: a watch snapshot or machine list of a thousand machines)
   * sends more than it lets a peer that has not yet proven who it is send.
   *
   * @default maxFrameBytes
   */
  maxSendFrameBytes?: number

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
  readonly maxSendFrameBytes: number
  readonly counters: FrameErrorCounters | undefined
  readonly #decoder: FrameDecoder
  #failure: Error | undefined
  #wake: PromiseWithResolvers<void> | undefined
  #reading = false

  constructor(stream: Stream, init: FramedStreamInit = {}) {
    this.stream = stream
    this.maxFrameBytes = checkMaxFrameBytes(init.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES)
    this.maxSendFrameBytes = checkMaxFrameBytes(init.maxSendFrameBytes ?? this.maxFrameBytes)
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
   * @throws {FrameTooLargeError} when the frame exceeds `maxSendFrameBytes`; the stream is left intact
   */
  async send(frame: Uint8Array | Uint8ArrayList, options?: AbortOptions): Promise<void> {
    const size = frame.byteLength
    if (size > this.maxSendFrameBytes) throw new FrameTooLargeError(size, this.maxSendFrameBytes, 'outbound')
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

      // Ended only once nothing is buffered: negotiation may hand back bytes it read
      // ahead (unwrap → unshift) after libp2p already called the readable end ended.
      if (this.stream.readableEnded && this.stream.readBufferLength === 0) {
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
