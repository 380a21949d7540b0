/**
 * Typed errors shared by the fleetmesh protocol layer.
 *
 * Every class sets `name` to its own class name so callers (and the metrics
 * that count failures) can tell errors apart after they cross an `await`, a
 * worker boundary or a log line, where `instanceof` is not always available.
 */

/**
 * A frame's length prefix announced more bytes than this end accepts, or the
 * application asked to send such a frame.
 *
 * On receipt the stream is reset: the peer is either broken or hostile, and
 * skipping the payload would mean reading bytes we just decided not to buffer.
 */
export class FrameTooLargeError extends Error {
  override readonly name = 'FrameTooLargeError'
  /** The announced (inbound) or requested (outbound) frame size in bytes */
  readonly size: number
  /** The largest frame this stream accepts in bytes */
  readonly max: number
  readonly direction: 'inbound' | 'outbound'

  constructor(size: number, max: number, direction: 'inbound' | 'outbound') {
    super(
      direction === 'inbound'
        ? `peer announced a ${size}-byte frame but this stream accepts at most ${max} bytes per frame; the stream was reset`
        : `refusing to send a ${size}-byte frame: this stream accepts at most ${max} bytes per frame; split the payload or raise maxFrameBytes on both ends`,
    )
    this.size = size
    this.max = max
    this.direction = direction
  }
}

/**
 * A complete frame arrived but its contents did not decode or validate.
 *
 * Protocol handlers throw this; `handleFramed` counts it under `decode` and
 * resets only the offending stream.
 */
export class FrameDecodeError extends Error {
  override readonly name = 'FrameDecodeError'

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/**
 * The remote closed its writable end before a whole frame arrived: either in
 * the middle of a frame, or before the one frame a request/response exchange
 * was waiting for.
 */
export class UnexpectedEndOfStreamError extends Error {
  override readonly name = 'UnexpectedEndOfStreamError'
  /** Bytes of the unfinished frame (prefix included) that did arrive */
  readonly receivedBytes: number
  /** Bytes the unfinished frame needed (prefix included), when the prefix was read */
  readonly expectedBytes: number | undefined

  constructor(receivedBytes: number, expectedBytes?: number) {
    super(
      receivedBytes === 0
        ? 'stream ended before a frame arrived; expected the peer to send one more frame before closing'
        : expectedBytes === undefined
          ? `stream ended ${receivedBytes} byte(s) into a 4-byte frame length prefix; expected the peer to finish the frame before closing`
          : `stream ended after ${receivedBytes} of ${expectedBytes} frame bytes; expected the peer to finish the frame before closing`,
    )
    this.receivedBytes = receivedBytes
    this.expectedBytes = expectedBytes
  }
}
