/**
 * `<stateDir>/update.json`, the updater's journal: the highest manifest sequence
 * ever attempted, the ids of recent manifests, and the record of the update in
 * progress (or the last one), whose `step` is written before that step starts so
 * recovery after a crash knows exactly which step was in flight.
 *
 * The highest sequence is the agent's only defence against a replayed, older
 * manifest (a downgrade), so it does not live in update.json alone:
 * `<stateDir>/manifests/` keeps the signed envelopes of the newest attempted
 * manifests, and the mark is the highest of both. Losing update.json, or moving
 * a damaged one aside, keeps the mark; a damaged kept manifest fails its
 * signature check and is skipped, so damage never raises the mark either.
 */
import { readdir, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import {
  ensureDir,
  errorMessage,
  fromBase64,
  PersistError,
  readJsonIfExists,
  removeStaleTemps,
  writeFileAtomic,
  writeJsonAtomic,
} from '../lib/index.ts'
import {
  type ErrorInfo,
  errorInfo,
  MAX_ERROR_MESSAGE,
  MAX_REPORT_LOG,
  type UpdateState,
} from '../protocol/index.ts'
import { generationInfoSchema } from './activator.ts'

export const STEPS = [
  'downloading',
  'verified',
  'waiting-for-window',
  'activating',
  'confirming',
  'committed',
  'rolling-back',
  'rolled-back',
  'failed',
] as const satisfies readonly UpdateState[]
export type Step = (typeof STEPS)[number]

const recordSchema = z.strictObject({
  manifestId: z.string(),
  sequence: z.number().int().nonnegative(),
  rolloutId: z.string(),
  generation: z.string(),
  /** The signed manifest envelope, base64, so recovery can re-verify exactly what was offered. */
  envelope: z.string(),
  step: z.enum(STEPS),
  /** How many times the current step has been started. */
  attempt: z.number().int().min(1),
  artifact: z.string().nullable(),
  target: generationInfoSchema.nullable(),
  previous: generationInfoSchema.nullable(),
  startedAt: z.number(),
  updatedAt: z.number(),
  error: errorInfo.nullable(),
  /** The update log so far (its tail): what was fetched, what the activation printed. */
  log: z.string().max(MAX_REPORT_LOG).optional(),
  /** The activated generation takes effect only after a reboot. */
  rebootRequired: z.boolean().optional(),
})
export type UpdateRecord = z.infer<typeof recordSchema>

const RECENT_IDS = 32

const stateSchema = z.strictObject({
  v: z.literal(1),
  lastSequence: z.number().int().nonnegative(),
  /** Ids of recently attempted manifests: a re-delivery of one of them is ignored rather than refused. */
  recentIds: z.array(z.string()).max(RECENT_IDS),
  update: recordSchema.nullable(),
})
type StateFile = z.infer<typeof stateSchema>

/** An error as update.json and status reports carry it: a short code and a bounded message. */
export function updateError(code: string, message: string): ErrorInfo {
  return {
    code: code.slice(0, 64),
    message: message.length > MAX_ERROR_MESSAGE ? `${message.slice(0, MAX_ERROR_MESSAGE - 1)}…` : message,
  }
}

/** Reads back a kept manifest envelope: its id and sequence if it is genuine, else undefined. */
export type ReadAttempted = (envelope: Uint8Array) => { id: string; sequence: number } | undefined

/** update.json cannot be read; the message says whether moving it aside is safe. */
export class JournalDamagedError extends Error {
  override name = 'JournalDamagedError'
}

export class UpdateJournal {
  readonly #path: string
  readonly #state: StateFile
  readonly #kept: KeptManifests

  private constructor(path: string, state: StateFile, kept: KeptManifests) {
    this.#path = path
    this.#state = state
    this.#kept = kept
  }

  /** Reads the journal in `stateDir`, or starts an empty one (first start, or update.json lost). */
  static async open(stateDir: string, readAttempted: ReadAttempted): Promise<UpdateJournal> {
    await ensureDir(stateDir)
    await removeStaleTemps(stateDir)
    const kept = await KeptManifests.open(join(stateDir, 'manifests'), readAttempted)
    const path = join(stateDir, 'update.json')
    let file: StateFile | undefined
    try {
      file = await readJsonIfExists(path, stateSchema)
    } catch (err) {
      if (!(err instanceof PersistError) || err.code === 'unreadable') throw err
      throw damagedJournal(path, err, kept)
    }
    const state: StateFile = file ?? { v: 1, lastSequence: 0, recentIds: [], update: null }
    const newest = kept.newest
    if (newest !== undefined && newest.sequence > state.lastSequence) {
      state.lastSequence = newest.sequence
      // so the coordinator re-sending that manifest (it does on every reconnect) is no replay
      state.recentIds = [...state.recentIds.filter((id) => id !== newest.id), newest.id].slice(-RECENT_IDS)
    }
    // A crash between writing update.json and keeping its manifest: keep it now.
    const update = state.update
    if (update !== null && !kept.has(update.sequence)) await kept.keep(fromBase64(update.envelope))
    return new UpdateJournal(path, state, kept)
  }

  /** Highest manifest sequence ever attempted; only higher ones are accepted. */
  get lastSequence(): number {
    return this.#state.lastSequence
  }

  /** The id of the manifest attempted last. */
  get lastId(): string | undefined {
    return this.#state.recentIds.at(-1)
  }

  /** The current (or last) update, if any was ever started. */
  get update(): UpdateRecord | null {
    return this.#state.update
  }

  /** The update in progress; only called where one must be. */
  record(): UpdateRecord {
    const rec = this.#state.update
    if (rec === null) throw new Error('no update in progress')
    return rec
  }

  /**
   * Makes `record` the update in progress, counts its manifest as attempted, and
   * writes both to disk: update.json first (a manifest kept but not journalled
   * would be refused as a replay when re-offered), then the kept manifest.
   */
  async begin(record: UpdateRecord): Promise<void> {
    const id = record.manifestId
    this.#state.lastSequence = Math.max(this.#state.lastSequence, record.sequence)
    this.#state.recentIds = [...this.#state.recentIds.filter((r) => r !== id), id].slice(-RECENT_IDS)
    this.#state.update = record
    await this.persist()
    await this.#kept.keep(fromBase64(record.envelope))
  }

  /** Writes the journal (after changing the record) atomically. */
  async persist(): Promise<void> {
    await writeJsonAtomic(this.#path, this.#state)
  }
}

/** How many attempted manifests are kept; the mark needs only the newest. */
const KEEP_MANIFESTS = 8
const KEPT_FILE = /^(\d{1,16})\.manifest$/

/** `<dir>/<sequence>.manifest`: the signed envelopes of the newest attempted manifests. */
class KeptManifests {
  readonly dir: string
  readonly #read: ReadAttempted
  /** The genuine ones: manifest ids by sequence. */
  readonly #kept: Map<number, string>

  private constructor(dir: string, read: ReadAttempted, kept: Map<number, string>) {
    this.dir = dir
    this.#read = read
    this.#kept = kept
  }

  static async open(dir: string, readAttempted: ReadAttempted): Promise<KeptManifests> {
    await ensureDir(dir)
    await removeStaleTemps(dir)
    const kept = new Map<number, string>()
    for (const name of await readdir(dir)) {
      if (!KEPT_FILE.test(name)) continue
      const manifest = readAttempted(new Uint8Array(await readFile(join(dir, name))))
      if (manifest !== undefined) kept.set(manifest.sequence, manifest.id)
    }
    return new KeptManifests(dir, readAttempted, kept)
  }

  /** The attempted manifest with the highest sequence, if any is kept. */
  get newest(): { id: string; sequence: number } | undefined {
    const sequence = Math.max(0, ...this.#kept.keys())
    const id = this.#kept.get(sequence)
    return id === undefined ? undefined : { id, sequence }
  }

  has(sequence: number): boolean {
    return this.#kept.has(sequence)
  }

  /**
   * Keeps a genuine envelope (anything else is ignored), then forgets all but the
   * newest few: the highest is never among those removed.
   */
  async keep(envelope: Uint8Array): Promise<void> {
    const manifest = this.#read(envelope)
    if (manifest === undefined) return
    await writeFileAtomic(join(this.dir, `${manifest.sequence}.manifest`), envelope)
    this.#kept.set(manifest.sequence, manifest.id)
    const old = [...this.#kept.keys()].sort((a, b) => b - a).slice(KEEP_MANIFESTS)
    for (const seq of old) {
      await unlink(join(this.dir, `${seq}.manifest`)).catch(() => {})
      this.#kept.delete(seq)
    }
  }
}

/** What to do about a damaged update.json depends on whether the mark survives without it. */
function damagedJournal(path: string, err: PersistError, kept: KeptManifests): JournalDamagedError {
  const newest = kept.newest
  const advice =
    newest !== undefined
      ? 'Moving it aside is safe for replay protection: the agent still refuses every manifest at or below ' +
        `sequence ${newest.sequence}, which it also reads from the signed manifests in ${kept.dir} (leave those ` +
        'in place). An update that was in progress is then neither resumed nor rolled back: after the restart, ' +
        'check which generation is active and deploy again if needed.'
      : `The agent has no other record of the highest manifest sequence it attempted (${kept.dir} is empty), so ` +
        'moving update.json aside would let an older signed manifest be applied again (a downgrade). Restore it ' +
        'from a backup, or repair it keeping "lastSequence" at least at the sequence of the last manifest ' +
        'deployed to this machine.'
  // lib's generic advice ("move it aside") is not safe here, so only the problem is kept
  const detail =
    err.code === 'corrupt'
      ? `not valid JSON: ${errorMessage(err.cause)}`
      : err.message.replace(`${path} `, '')
  return new JournalDamagedError(`${path} is damaged (${detail}); the agent will not start. ${advice}`, {
    cause: err,
  })
}
