/**
 * The live tail of the running update's output, for `fleetmesh logs <machine>
 * --follow`: what its activation and health checks print is sent as it comes,
 * in chunks (protocol/update-log.ts): at most every `flushMs`, at once when
 * MAX_UPDATE_LOG_CHUNK bytes are waiting, and whenever the update changes step,
 * so output always goes out before the state change it led to. One update's
 * live log holds at most MAX_REPORT_LOG bytes, as its final log does: lines
 * beyond are dropped, and before the update's final step a note says how many
 * bytes were. Sending is best effort (the link drops chunks while offline, and
 * for a coordinator that does not take them); the offsets show the gaps.
 *
 * @example
 *
 * ```ts
 * const live = new UpdateLogStream({ send: (chunk) => link.sendUpdateLog(chunk), manifestId: () => current })
 * await runProcess(argv, { …, onOutput: live.write })
 * live.flush(true) // the update ended
 * ```
 */
import { MAX_REPORT_LOG, MAX_UPDATE_LOG_CHUNK, type UpdateLogFrame, utf8Length } from '../protocol/index.ts'

export type UpdateLogChunk = Omit<UpdateLogFrame, 't'>

/** Room kept at the end of the live log for the note on dropped output. */
const NOTE_ROOM = 64
const encoder = new TextEncoder()

export interface UpdateLogStreamInit {
  /** Hands one chunk to the network side; must not throw (best effort). */
  send: (chunk: UpdateLogChunk) => void
  /** The update running now, whose output is written; null when none is. */
  manifestId: () => string | null
  /** The longest output waits before it is sent. Default 250 ms. */
  flushMs?: number
}

export class UpdateLogStream {
  readonly #init: UpdateLogStreamInit
  /** The update whose live log this is, once it printed anything. */
  #manifestId: string | null = null
  #pending = ''
  /** Bytes of the live log sent (or given up to a gap), the next chunk's offset. */
  #sent = 0
  /** Bytes dropped because the live log was full. */
  #dropped = 0
  #atLineStart = true
  #timer: NodeJS.Timeout | undefined

  constructor(init: UpdateLogStreamInit) {
    this.#init = init
  }

  /** Output of the running update (a function of its own, to hand to runProcess as it is). */
  readonly write = (text: string): void => {
    const id = this.#init.manifestId()
    if (id === null || text === '') return
    if (id !== this.#manifestId) {
      this.flush(true)
      this.#manifestId = id
    }
    this.#atLineStart = text.endsWith('\n')
    if (this.#dropped > 0) {
      this.#dropped += utf8Length(text)
      return
    }
    this.#pending += text
    if (utf8Length(this.#pending) >= MAX_UPDATE_LOG_CHUNK) this.flush()
    else this.#timer ??= setTimeout(() => this.flush(), this.#init.flushMs ?? 250).unref()
  }

  /** A line of its own, e.g. the command about to run: begins on a new line. */
  line(text: string): void {
    this.write(`${this.#atLineStart ? '' : '\n'}${text}\n`)
  }

  /**
   * Sends what is waiting; with `ended` (the update reached a final step, or
   * another one started) also the note on dropped output, and the next output
   * begins a new live log.
   */
  flush(ended = false): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const id = this.#manifestId
    if (id === null) return
    let text = this.#pending
    this.#pending = ''
    const room = MAX_REPORT_LOG - NOTE_ROOM - this.#sent
    const bytes = utf8Length(text)
    if (bytes > room) {
      // Whole lines only: the live log ends with the last line that fits.
      const fits = prefixWithin(text, room)
      text = fits.slice(0, fits.lastIndexOf('\n') + 1)
      this.#dropped += bytes - utf8Length(text)
    }
    while (text !== '') {
      const part = prefixWithin(text, MAX_UPDATE_LOG_CHUNK)
      this.#init.send({ manifestId: id, offset: this.#sent, text: part })
      this.#sent += utf8Length(part)
      text = text.slice(part.length)
    }
    if (!ended) return
    if (this.#dropped > 0)
      this.#init.send({ manifestId: id, offset: this.#sent, text: `[… ${this.#dropped} bytes dropped]\n` })
    this.#manifestId = null
    this.#sent = 0
    this.#dropped = 0
    this.#atLineStart = true
  }
}

/** The longest start of `text` that is at most `maxBytes` bytes of UTF-8, never splitting a character. */
function prefixWithin(text: string, maxBytes: number): string {
  return text.slice(0, encoder.encodeInto(text, new Uint8Array(Math.max(0, maxBytes))).read)
}
