/**
 * Opens signed status reports on worker threads. Checking a report's Ed25519
 * signature was about half of the coordinator's CPU during a burst of reports
 * (`npm run bench -- fleet`), all of it on the one thread that also reads every
 * connection; the other cores sat idle. The pool runs the very same
 * `openEnvelope` (decode, signature, schema) on one worker per core.
 *
 * Reports handed in during one event-loop turn travel to a worker together, so
 * the cost of a message between threads is paid per batch, not per report. A
 * refusal comes back as the same error (an EnvelopeError with the same code and
 * message) the inline check throws.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { PublicKey } from '../keys/index.ts'
import { EnvelopeError, type EnvelopeErrorCode, type StatusReport } from '../protocol/index.ts'

/** A batch of envelopes for a worker. */
export interface VerifyRequest {
  id: number
  envelopes: Uint8Array[]
}

/** A worker's verdict on one envelope. */
export type VerifyResult =
  | { ok: true; value: StatusReport; signer: Uint8Array }
  | { ok: false; name: string; message: string; code?: string }

/** An opened status report: what it says and who signed it. */
export interface OpenedReport {
  value: StatusReport
  signer: PublicKey
}

interface Waiting {
  resolve: (opened: OpenedReport) => void
  reject: (err: Error) => void
}

interface PoolWorker {
  worker: Worker
  /** Batches sent to it and not answered yet, by request id. */
  batches: Map<number, Waiting[]>
  /** Reports in those batches. */
  load: number
  /** Called on its next answer: `warm` waits for it. */
  answered: (() => void)[]
}

/** Most reports in one message to a worker: bounds the latency of the first one in it. */
const MAX_BATCH = 128

export class VerifyPool {
  readonly #size: number
  readonly #workers: PoolWorker[] = []
  #queue: { envelope: Uint8Array; waiting: Waiting }[] = []
  #scheduled = false
  #nextId = 0

  /** `size` workers (at least one), one per core by default. */
  constructor(size = availableParallelism()) {
    this.#size = Math.max(1, Math.floor(size))
  }

  /** Opens a status report envelope, or rejects as `openEnvelope` would have thrown. */
  open(envelope: Uint8Array): Promise<OpenedReport> {
    return new Promise((resolve, reject) => {
      // The one copy (new Uint8Array, not .slice(), which on a Buffer is a view): a buffer of its
      // own, moved to the worker (transferred, not copied again).
      // The caller keeps its view, which may share a large buffer (a whole read chunk).
      this.#queue.push({ envelope: new Uint8Array(envelope), waiting: { resolve, reject } })
      if (!this.#scheduled) {
        this.#scheduled = true
        setImmediate(() => this.#dispatch())
      }
    })
  }

  /**
   * Starts the workers and resolves once each has loaded and answered. A
   * worker's start (its module graph, about 0.4 s of CPU) otherwise lands on
   * the first reports, which after a restart is the whole fleet reconnecting.
   */
  async warm(): Promise<void> {
    this.#fill()
    await Promise.all(
      this.#workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            w.answered.push(resolve)
            w.worker.ref() // until it answers, as for a report
            const request: VerifyRequest = { id: ++this.#nextId, envelopes: [] }
            w.worker.postMessage(request)
          }),
      ),
    )
  }

  /** Stops the workers; reports still being checked are refused. New ones start on the next `open`. */
  async close(): Promise<void> {
    await Promise.all(this.#workers.splice(0).map((w) => this.#fail(w, 'the report verifier was closed')))
  }

  #dispatch(): void {
    this.#scheduled = false
    this.#fill()
    const queue = this.#queue
    this.#queue = []
    // Spread over the workers: a burst keeps every core busy, a single report goes to the idlest one.
    const per = Math.min(MAX_BATCH, Math.ceil(queue.length / this.#workers.length))
    for (let i = 0; i < queue.length; i += per) {
      const batch = queue.slice(i, i + per)
      const target = this.#workers.reduce((a, b) => (b.load < a.load ? b : a))
      const id = ++this.#nextId
      target.batches.set(
        id,
        batch.map((q) => q.waiting),
      )
      target.load += batch.length
      target.worker.ref() // a report being checked keeps the process up until its answer
      const request: VerifyRequest = { id, envelopes: batch.map((q) => q.envelope) }
      target.worker.postMessage(
        request,
        request.envelopes.map((e) => e.buffer as ArrayBuffer),
      )
    }
  }

  #fill(): void {
    while (this.#workers.length < this.#size) this.#workers.push(this.#spawn())
  }

  #spawn(): PoolWorker {
    const worker = new Worker(new URL('./verify-pool-worker.ts', import.meta.url))
    const w: PoolWorker = { worker, batches: new Map(), load: 0, answered: [] }
    worker.on('message', ({ id, results }: { id: number; results: VerifyResult[] }) => {
      const waiting = w.batches.get(id) ?? []
      w.batches.delete(id)
      w.load -= waiting.length
      for (const [i, wt] of waiting.entries()) settle(wt, results[i])
      for (const done of w.answered.splice(0)) done()
      if (w.load === 0) w.worker.unref()
    })
    worker.on('error', (err) => void this.#fail(w, `the report verifier thread failed: ${err.message}`))
    worker.on('exit', (code) => void this.#fail(w, `the report verifier thread exited with code ${code}`))
    // After the listeners (adding a 'message' listener refs the worker's port again): an idle
    // pool must not keep the process alive, or a coordinator that stopped would never exit.
    worker.unref()
    return w
  }

  /** Refuses what a worker still had, and forgets it (a new one is started when needed). */
  async #fail(w: PoolWorker, why: string): Promise<void> {
    const i = this.#workers.indexOf(w)
    if (i >= 0) this.#workers.splice(i, 1)
    for (const waiting of w.batches.values()) for (const wt of waiting) wt.reject(new Error(why))
    w.batches.clear()
    w.load = 0
    for (const done of w.answered.splice(0)) done() // warm: a worker that failed is started again on use
    await w.worker.terminate()
  }
}

function settle(waiting: Waiting, result: VerifyResult | undefined): void {
  if (result === undefined) waiting.reject(new Error('the report verifier gave no answer for a report'))
  else if (result.ok) waiting.resolve({ value: result.value, signer: PublicKey.fromBytes(result.signer) })
  else if (result.name === 'EnvelopeError' && result.code !== undefined)
    waiting.reject(new EnvelopeError(result.code as EnvelopeErrorCode, result.message))
  else waiting.reject(Object.assign(new Error(result.message), { name: result.name }))
}

/** The process's pool: workers are per process, not per coordinator (tests run several in one). */
export const verifyPool = new VerifyPool()
