/**
 * Status reports queued on disk until the coordinator acknowledges them. A report
 * is written (atomically) before it is first sent, so an agent that is offline or
 * restarts still delivers every state transition, in order, when it reconnects.
 *
 * Layout of `<stateDir>/outbox/`: one file per report, `<seq, 16 digits>.<kind>.env`
 * holding the signed envelope, plus `next-seq.json`, the counter that makes sure
 * a seq is never handed out twice, even across restarts.
 *
 * @example
 *
 * ```ts
 * const outbox = await Outbox.open(stateDir)
 * const seq = await outbox.nextSeq()
 * await outbox.enqueue(seq, sealEnvelope(statusReportSchema, DOMAINS.status, { ...report, seq }, key))
 * for (const { seq, envelope } of await outbox.pending()) send(envelope)
 * await outbox.ack(lastAckedSeq)
 * ```
 */
import { readdir, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import {
  ensureDir,
  fsyncDir,
  readJsonIfExists,
  removeStaleTemps,
  serialiser,
  writeFileAtomic,
  writeJsonAtomic,
} from '../lib/index.ts'
import type { StatusReport, UpdateState } from '../protocol/index.ts'

/**
 * What may be dropped when the queue is full: progress reports first (a later one
 * says more), then intermediate transitions; terminal reports (committed,
 * rolled-back, failed, refused, idle) are the outcome of an update and are never dropped.
 */
export type ReportKind = 'progress' | 'transition' | 'terminal'

const TERMINAL: ReadonlySet<UpdateState> = new Set(['idle', 'committed', 'rolled-back', 'failed', 'refused'])

export function reportKind(report: Pick<StatusReport, 'state' | 'progress'>): ReportKind {
  if (TERMINAL.has(report.state)) return 'terminal'
  return report.progress !== null ? 'progress' : 'transition'
}

export class OutboxFullError extends Error {
  override name = 'OutboxFullError'
}

export interface OutboxInit {
  /** Queue bound; beyond it progress, then transition reports are dropped, oldest first. Default 10,000. */
  maxEntries?: number
}

export interface QueuedReport {
  seq: number
  envelope: Uint8Array
}

interface Entry {
  seq: number
  kind: ReportKind
}

const FILE = /^(\d{16})\.(progress|transition|terminal)\.env$/
const counterSchema = z.strictObject({ next: z.number().int().min(1) })
const fileName = (e: Entry) => `${String(e.seq).padStart(16, '0')}.${e.kind}.env`

export class Outbox {
  readonly dir: string
  readonly #max: number
  readonly #counterPath: string
  /** Sorted by seq. */
  #entries: Entry[]
  #next: number
  readonly #serial = serialiser()

  private constructor(dir: string, max: number, entries: Entry[], next: number) {
    this.dir = dir
    this.#max = max
    this.#counterPath = join(dir, 'next-seq.json')
    this.#entries = entries
    this.#next = next
  }

  static async open(stateDir: string, init: OutboxInit = {}): Promise<Outbox> {
    const dir = join(stateDir, 'outbox')
    await ensureDir(dir)
    await removeStaleTemps(dir)
    const entries: Entry[] = []
    for (const name of await readdir(dir)) {
      const m = FILE.exec(name)
      if (m !== null) entries.push({ seq: Number(m[1]), kind: m[2] as ReportKind })
    }
    entries.sort((a, b) => a.seq - b.seq)
    const counter = await readJsonIfExists(join(dir, 'next-seq.json'), counterSchema)
    // Queued files count too, in case the counter file was lost: a seq on disk is taken.
    const next = Math.max(counter?.next ?? 1, (entries.at(-1)?.seq ?? 0) + 1)
    return new Outbox(dir, init.maxEntries ?? 10_000, entries, next)
  }

  /** Reserves the next report seq; it is on disk before it is returned, so it is never reused. */
  nextSeq(): Promise<number> {
    return this.#serial(async () => {
      const seq = this.#next
      await writeJsonAtomic(this.#counterPath, { next: seq + 1 })
      this.#next = seq + 1
      return seq
    })
  }

  /** Queues a signed report. Resolves with the seqs dropped to make room (usually none). */
  enqueue(seq: number, envelope: Uint8Array, kind: ReportKind = 'terminal'): Promise<number[]> {
    if (!Number.isSafeInteger(seq) || seq < 1) {
      return Promise.reject(new RangeError(`report seq must be a positive integer, got ${seq}`))
    }
    return this.#serial(async () => {
      const dropped: number[] = []
      while (this.#entries.length >= this.#max) {
        const victim =
          this.#entries.find((e) => e.kind === 'progress') ??
          this.#entries.find((e) => e.kind === 'transition')
        if (victim === undefined) break
        await unlink(join(this.dir, fileName(victim))).catch(() => {})
        this.#entries = this.#entries.filter((e) => e !== victim)
        dropped.push(victim.seq)
      }
      // Only terminal reports are left; they may exceed the bound, but not without limit.
      if (this.#entries.length >= this.#max * 2) {
        throw new OutboxFullError(
          `the outbox holds ${this.#entries.length} final status reports the coordinator has not acknowledged; ` +
            'check that the agent can reach the coordinator',
        )
      }
      const entry: Entry = { seq, kind }
      const existing = this.#entries.findIndex((e) => e.seq === seq)
      if (existing >= 0) {
        const old = this.#entries[existing] as Entry
        if (old.kind !== kind) await unlink(join(this.dir, fileName(old))).catch(() => {})
        this.#entries.splice(existing, 1)
      }
      await writeFileAtomic(join(this.dir, fileName(entry)), envelope)
      if (seq >= this.#next) {
        await writeJsonAtomic(this.#counterPath, { next: seq + 1 })
        this.#next = seq + 1
      }
      const at = this.#entries.findIndex((e) => e.seq > seq)
      if (at < 0) this.#entries.push(entry)
      else this.#entries.splice(at, 0, entry)
      return dropped
    })
  }

  /** Queued reports in seq order, at most `limit` of them. */
  pending(limit = Number.POSITIVE_INFINITY): Promise<QueuedReport[]> {
    return this.#serial(async () => {
      const out: QueuedReport[] = []
      for (const entry of this.#entries.slice(0, limit)) {
        const bytes = await readFile(join(this.dir, fileName(entry)))
        out.push({
          seq: entry.seq,
          envelope: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        })
      }
      return out
    })
  }

  /** Deletes every report with seq ≤ `seq` (the coordinator acknowledges cumulatively). */
  ack(seq: number): Promise<number> {
    return this.#serial(async () => {
      const done = this.#entries.filter((e) => e.seq <= seq)
      if (done.length === 0) return 0
      for (const entry of done) await unlink(join(this.dir, fileName(entry))).catch(() => {})
      await fsyncDir(this.dir)
      this.#entries = this.#entries.filter((e) => e.seq > seq)
      return done.length
    })
  }

  get size(): number {
    return this.#entries.length
  }
}
