/**
 * The frame format and its transport-free decoder.
 *
 * A frame is a 4-byte big-endian unsigned length followed by that many bytes.
 * {@link FrameDecoder} takes chunks as they arrive and hands out whole frames,
 * rejecting an oversized length prefix before any of its payload is kept; the
 * stream wrapper (framed-stream.ts) and the fuzz tests both drive it.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { FrameTooLargeError, UnexpectedEndOfStreamError } from './errors.ts'

/** Default hard maximum payload size of one frame: 1 MiB */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

/** Size of the big-endian length prefix in bytes */
export const FRAME_PREFIX_BYTES = 4

/** The largest payload a 4-byte prefix can announce */
const MAX_ENCODABLE_FRAME_BYTES = 0xffff_ffff

/** Returns `max` if a 4-byte prefix can announce it, else throws a RangeError naming the allowed range */
export function checkMaxFrameBytes(max: number): number {
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
