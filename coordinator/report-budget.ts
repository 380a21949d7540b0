/**
 * A fleet-wide bound on status reports in flight: read from their control
 * streams, verified or being verified, not yet committed. Each session already
 * bounds its own (control.ts); this bounds them all together, so a burst from
 * every agent at once (after an outage, each with a queue of reports) waits in
 * the agents' queues and the kernel's socket buffers, not in the coordinator's
 * memory and event loop. Sessions that must wait are served first come, first served.
 */
export class ReportBudget {
  #free: number
  readonly #waiting: (() => void)[] = []

  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1)
      throw new RangeError(`a report budget needs max >= 1, got ${max}`)
    this.#free = max
  }

  /** Reports that may still be taken in before one has to wait. */
  get free(): number {
    return this.#free
  }

  /** Takes one report's place, waiting for one to be released when none is free. */
  acquire(): Promise<void> | undefined {
    if (this.#free > 0) {
      this.#free--
      return undefined
    }
    return new Promise<void>((resolve) => this.#waiting.push(resolve))
  }

  /** The report is committed (or refused): its place goes to the longest waiting session. */
  release(): void {
    const next = this.#waiting.shift()
    if (next !== undefined) next()
    else this.#free++
  }
}
