/**
 * Group commit: what is handed in during one event-loop turn, or while the
 * batch before it runs, goes in one batch; each caller awaits its own item, and
 * one `run` (one transaction, say, with one fsync) serves them all. Batches run
 * one at a time, at most `maxBatch` items each, and between two the event loop
 * gets a turn, so that what arrived meanwhile (frames read during a commit)
 * joins the next one. `run` answers each item in order; an Error as an answer
 * rejects that item's caller alone, a throw rejects the whole batch's.
 *
 * @example
 *
 * ```ts
 * const touches = new TickBatch<string, undefined>((names) => db.transaction(() => names.map(touch)))
 * await touches.add('edge-1') // with every other add of this turn, in one transaction
 * ```
 */
export class TickBatch<T, R> {
  readonly #run: (items: T[]) => Promise<(R | Error)[]> | (R | Error)[]
  readonly #maxBatch: number
  #queue: { item: T; resolve: (answer: R) => void; reject: (err: Error) => void }[] = []
  #draining = false

  constructor(
    run: (items: T[]) => Promise<(R | Error)[]> | (R | Error)[],
    maxBatch = Number.POSITIVE_INFINITY,
  ) {
    this.#run = run
    this.#maxBatch = maxBatch
  }

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject })
      if (this.#draining) return
      this.#draining = true
      setImmediate(() => void this.#drain())
    })
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch)
      let answers: (R | Error)[] | undefined
      try {
        answers = await this.#run(batch.map((b) => b.item))
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err))
        for (const b of batch) b.reject(error)
      }
      if (answers !== undefined)
        for (const [i, b] of batch.entries()) {
          const answer = answers[i]
          if (answer instanceof Error) b.reject(answer)
          else if (i >= answers.length) b.reject(new Error('the batch gave no answer for this item'))
          else b.resolve(answer as R)
        }
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    this.#draining = false
  }
}
