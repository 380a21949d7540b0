/**
 * Acknowledgements of one control session's status reports, one frame per
 * commit batch. Acks are cumulative (an agent drops every queued report up to
 * the seq acknowledged), and a group commit makes a whole batch of a session's
 * reports durable at once: one ack with the highest seq says what one ack per
 * report said, at a fraction of the socket writes.
 */

/** Sends the highest seq stored since the last ack, once the reports stored in the same turn are in. */
export class CumulativeAcks {
  readonly #send: (seq: number) => Promise<void>
  readonly #onError: (err: unknown) => void
  #highest = 0
  #scheduled = false
  #sent: Promise<void> = Promise.resolve()

  /** `onError`: an ack could not be sent (the stream is gone); later acks are not attempted. */
  constructor(send: (seq: number) => Promise<void>, onError: (err: unknown) => void) {
    this.#send = send
    this.#onError = onError
  }

  /** The report `seq` is durably stored: acknowledge it with the others stored in this turn. */
  stored(seq: number): void {
    this.#highest = Math.max(this.#highest, seq)
    if (this.#scheduled) return
    this.#scheduled = true
    const turn = new Promise<void>((resolve) => setImmediate(resolve))
    this.#sent = Promise.all([this.#sent, turn]).then(() => {
      this.#scheduled = false
      return this.#send(this.#highest)
    })
    this.#sent.catch(this.#onError)
  }

  /** Resolves once every ack asked for so far is sent; rejects if one could not be. */
  settled(): Promise<void> {
    return this.#sent
  }
}
