/**
 * Group commit for status reports. Every report must be durable before it is
 * acknowledged, and a durable SQLite commit costs an fsync; committing each
 * report alone caps ingest at the disk's fsync rate. Reports that arrive while a
 * commit is in flight (or in the same event-loop turn) are written together in
 * the next transaction, so the fsync cost is shared and no report waits longer
 * than one commit plus its own (lib/tick-batch.ts).
 *
 * A report under a seq already stored is a duplicate only if it is the same
 * report; one with other content means the agent's numbering went back. It is
 * 'reused': not stored, counted, and left to the caller to log.
 */
import { TickBatch } from '../lib/index.ts'
import { type FleetStore, type StatusRecord, StoreConflictError } from './store.ts'

export type IngestOutcome = 'stored' | 'duplicate' | 'reused'

/**
 * Most reports in one transaction. SQLite commits on the event loop's thread, and a
 * batch of 1,024 held it for 30–180 ms (fsync included) on the bench machine, which
 * every other connection waited out; 256 keep a commit short and still share one
 * fsync among hundreds of reports.
 */
const MAX_BATCH = 256

export class StatusIngest {
  readonly #store: FleetStore
  /** Each report with performance.now() when it was handed in */
  readonly #batches: TickBatch<{ record: StatusRecord; at: number }, IngestOutcome>
  /** Commits done and reports written, for metrics and the benchmark. */
  commits = 0
  reports = 0
  /** Reports that reused a stored seq with other content (so were not stored). */
  reused = 0
  /** Told each stored batch's reports' time from receipt to durable commit, in seconds (metrics). */
  onCommitted: ((seconds: readonly number[]) => void) | undefined

  constructor(store: FleetStore, maxBatch = MAX_BATCH) {
    this.#store = store
    this.#batches = new TickBatch((batch) => this.#commit(batch), maxBatch)
  }

  /** Resolves once the report is durably stored (or found to be a duplicate, or a reused seq). */
  record(record: StatusRecord): Promise<IngestOutcome> {
    return this.#batches.add({ record, at: performance.now() })
  }

  async #commit(batch: { record: StatusRecord; at: number }[]): Promise<(IngestOutcome | Error)[]> {
    const outcomes = await this.#store.recordStatuses(batch.map((p) => p.record))
    this.commits++
    this.reports += batch.length
    const committed = performance.now()
    this.onCommitted?.(batch.map((p) => (committed - p.at) / 1000))
    return batch.map((_, i) => {
      const o = outcomes[i]
      if (!(o instanceof StoreConflictError && o.code === 'seq-reused'))
        return o ?? new Error('missing outcome')
      this.reused++
      return 'reused'
    })
  }
}
