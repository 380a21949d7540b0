/**
 * Status reports queued on disk until the coordinator acknowledges them. A report
 * is written (atomically) before it is first sent, so an agent that is offline or
 * restarts still delivers every state transition, in order, when it reconnects.
 *
 * Layout of `<stateDir>/outbox/`: one file per report, `<seq, 16 digits>.<kind>.env`
 * holding the signed envelope, plus `next-seq.json`, the counter that makes sure
 * a seq is never handed out twice, even across restarts.
 *
 * The coordinator keeps one report per (machine, seq), so a counter that went
 * back (next-seq.json lost or damaged, or the state restored from a backup)
 * would make new reports look like ones it already stored. On every connect
 * {@link Outbox.reconcile} takes the highest seq the coordinator stored: when
 * the numbering cannot be trusted, every queued report is signed again under a
 * seq above that mark, in order, and numbering continues above it.
 *
 * @example
 *
 * ```ts
 * const outbox = await Outbox.open(stateDir)
 * const seq = await outbox.nextSeq()
 * await outbox.enqueue(seq, sealEnvelope(statusReportSchema, DOMAINS.status, { ...report, seq }, key))
 * await outbox.reconcile(storedByCoordinator) // on connect, before sending
 * for (const { seq, envelope } of await outbox.pending()) send(envelope)
 * await outbox.ack(lastAckedSeq)
 * ```
 */
import { readdir, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { DOMAINS, type PrivateKey } from '../keys/index.ts'
import {
  ensureDir,
  fsyncDir,
  PersistError,
  readJsonIfExists,
  removeStaleTemps,
  serialiser,
  writeFileAtomic,
  writeJsonAtomic,
} from '../lib/index.ts'
import {
  openEnvelope,
  type StatusReport,
  sealEnvelope,
  statusReportSchema,
  type UpdateState,
} from '../protocol/index.ts'

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
  /**
   * The agent's key, to sign queued reports again under new seqs when
   * {@link Outbox.reconcile} renumbers them; without it they are sent as numbered,
   * and the coordinator counts those that reuse a stored seq.
   */
  signer?: PrivateKey
}

/** What {@link Outbox.reconcile} did. */
export interface Reconciled {
  /** Reports the coordinator already stored, dropped. */
  acked: number
  /** Reports signed again under a seq above the coordinator's mark. */
  renumbered: number
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
const counterSchema = z.strictObject({
  next: z.number().int().min(1),
  /** The counter was lost: until the coordinator's mark is known, queued seqs may collide with stored ones. */
  unconfirmed: z.literal(true).optional(),
})
const fileName = (e: Entry) => `${String(e.seq).padStart(16, '0')}.${e.kind}.env`

export class Outbox {
  readonly dir: string
  readonly #max: number
  readonly #signer: PrivateKey | undefined
  readonly #counterPath: string
  /** Sorted by seq. */
  #entries: Entry[]
  #next: number
  #unconfirmed: boolean
  /** After a renumbering: seqs below this, handed out before it and enqueued after, are renumbered too. */
  #staleBelow = 0
  readonly #serial = serialiser()

  private constructor(dir: string, init: OutboxInit, entries: Entry[], next: number, unconfirmed: boolean) {
    this.dir = dir
    this.#max = init.maxEntries ?? 10_000
    this.#signer = init.signer
    this.#counterPath = join(dir, 'next-seq.json')
    this.#entries = entries
    this.#next = next
    this.#unconfirmed = unconfirmed
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
    // A damaged counter is as good as a lost one: reconcile makes either safe.
    const counter = await readJsonIfExists(join(dir, 'next-seq.json'), counterSchema).catch(
      (err: unknown) => {
        if (err instanceof PersistError && err.code !== 'unreadable') return undefined
        throw err
      },
    )
    // Queued files count too, in case the counter file was lost: a seq on disk is taken.
    const next = Math.max(counter?.next ?? 1, (entries.at(-1)?.seq ?? 0) + 1)
    return new Outbox(dir, init, entries, next, counter === undefined || counter.unconfirmed === true)
  }

  /** Reserves the next report seq; it is on disk before it is returned, so it is never reused. */
  nextSeq(): Promise<number> {
    return this.#serial(async () => {
      const seq = this.#next
      await this.#setNext(seq + 1)
      return seq
    })
  }

  /**
   * Agrees with the coordinator on where numbering continues, given the highest
   * seq it stored for this machine (its hello). While the numbering can be
   * trusted, the reports up to that mark are stored and are dropped. When it
   * cannot (the counter was lost or damaged, or it is not above the mark: the
   * state went back), which queued reports the coordinator has is unknown, so
   * all of them are signed again, in order, under seqs above the mark; at worst
   * the coordinator then holds one report twice, never loses one.
   */
  reconcile(mark: number): Promise<Reconciled> {
    return this.#serial(async () => {
      if (!this.#unconfirmed && this.#next > mark) return { acked: await this.#ack(mark), renumbered: 0 }
      const start = Math.max(mark + 1, this.#next)
      const signer = this.#signer
      const old = this.#entries
      if (signer === undefined || old.every((e) => e.seq > mark)) {
        this.#staleBelow = mark + 1
        await this.#setNext(start, false)
        return { acked: 0, renumbered: 0 }
      }
      const renumbered: Entry[] = []
      for (const [i, entry] of old.entries()) {
        const moved = { seq: start + i, kind: entry.kind }
        const envelope = new Uint8Array(await readFile(join(this.dir, fileName(entry))))
        await writeFileAtomic(join(this.dir, fileName(moved)), resealed(envelope, moved.seq, signer))
        renumbered.push(moved)
      }
      // The new files and the counter first: a crash before the old files go only sends some twice.
      await this.#setNext(start + renumbered.length, false)
      for (const entry of old) await unlink(join(this.dir, fileName(entry))).catch(() => {})
      await fsyncDir(this.dir)
      this.#entries = renumbered
      // a report made before this and queued after is newer than every renumbered one
      this.#staleBelow = start
      return { acked: 0, renumbered: renumbered.length }
    })
  }

  /** Queues a signed report. Resolves with the seqs dropped to make room (usually none). */
  enqueue(seq: number, envelope: Uint8Array, kind: ReportKind = 'terminal'): Promise<number[]> {
    if (!Number.isSafeInteger(seq) || seq < 1) {
      return Promise.reject(new RangeError(`report seq must be a positive integer, got ${seq}`))
    }
    return this.#serial(async () => {
      // Handed out before a renumbering, signed after: it must not land below the mark either.
      if (seq < this.#staleBelow && this.#signer !== undefined) {
        envelope = resealed(envelope, this.#next, this.#signer)
        seq = this.#next
      }
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
      if (seq >= this.#next) await this.#setNext(seq + 1)
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
    return this.#serial(() => this.#ack(seq))
  }

  get size(): number {
    return this.#entries.length
  }

  async #ack(seq: number): Promise<number> {
    const done = this.#entries.filter((e) => e.seq <= seq)
    if (done.length === 0) return 0
    for (const entry of done) await unlink(join(this.dir, fileName(entry))).catch(() => {})
    await fsyncDir(this.dir)
    this.#entries = this.#entries.filter((e) => e.seq > seq)
    return done.length
  }

  /** Persists the counter (and whether it is still unconfirmed) before it is used. */
  async #setNext(next: number, unconfirmed = this.#unconfirmed): Promise<void> {
    await writeJsonAtomic(this.#counterPath, unconfirmed ? { next, unconfirmed } : { next })
    this.#next = next
    this.#unconfirmed = unconfirmed
  }
}

/** A queued report signed again under another seq; its content and timestamp stay as they were. */
function resealed(envelope: Uint8Array, seq: number, signer: PrivateKey): Uint8Array {
  const report = openEnvelope(statusReportSchema, DOMAINS.status, envelope).value
  return sealEnvelope(statusReportSchema, DOMAINS.status, { ...report, seq }, signer)
}
