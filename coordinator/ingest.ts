/**
 * Group commit for status reports. Every report must be durable before it is
 * acknowledged, and a durable SQLite commit costs an fsync; committing each
 * report alone caps ingest at the disk's fsync rate. Reports that arrive while a
 * commit is in flight (or in the same event-loop turn) are written together in
 * the next transaction, so the fsync cost is shared and no report waits longer
 * than one commit plus its own.
 */
import type { FleetStore, StatusRecord, StoreConflictError } from './store.ts'

type Outcome = 'stored' | 'duplicate'

interface Pending {
  record: StatusRecord
  resolve: (outcome: Outcome) => void
  reject: (err: Error) => void
}

export class StatusIngest {
  readonly #store: FleetStore
  readonly #maxBatch: number
  #queue: Pending[] = []
  #scheduled = false
  /** Commits done and reports written, for metrics and the benchmark. */
  commits = 0
  reports = 0

  constructor(store: FleetStore, maxBatch = 1024) {
    this.#store = store
    this.#maxBatch = maxBatch
  }

  /** Resolves once the report is durably stored (or found to be a duplicate). */
  record(record: StatusRecord): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ record, resolve, reject })
      if (!this.#scheduled) {
        this.#scheduled = true
        setImmediate(() => void this.#drain())
      }
    })
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch)
      let outcomes: (Outcome | StoreConflictError)[]
      try {
        outcomes = await this.#store.recordStatuses(batch.map((p) => p.record))
      } catch (err) {
        for (const p of batch) p.reject(err as Error)
        continue
      }
      this.commits++
      this.reports += batch.length
      batch.forEach((p, i) => {
        const o = outcomes[i]
        if (o instanceof Error || o === undefined) p.reject(o ?? new Error('missing outcome'))
        else p.resolve(o)
      })
      // Let frames that arrived during the commit be read before the next batch.
      await new Promise<void>((r) => setImmediate(r))
    }
    this.#scheduled = false
  }
}
