/**
 * Runs what is handed in during one event-loop turn as one batch: each caller
 * awaits its own item, and one `run` (one transaction, say, with one fsync)
 * serves them all. `run` answers each item in order; an Error as an answer
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
  #queue: { item: T; resolve: (answer: R) => void; reject: (err: Error) => void }[] = []
  #scheduled = false

  constructor(run: (items: T[]) => Promise<(R | Error)[]> | (R | Error)[]) {
    this.#run = run
  }

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject })
      if (this.#scheduled) return
      this.#scheduled = true
      setImmediate(() => void this.#flush())
    })
  }

  async #flush(): Promise<void> {
    const batch = this.#queue
    this.#queue = []
    this.#scheduled = false
    let answers: (R | Error)[]
    try {
      answers = await this.#run(batch.map((b) => b.item))
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err))
      for (const b of batch) b.reject(error)
      return
    }
    batch.forEach((b, i) => {
      const answer = answers[i]
      if (answer instanceof Error) b.reject(answer)
      else if (i >= answers.length) b.reject(new Error('the batch gave no answer for this item'))
      else b.resolve(answer as R)
    })
  }
}
