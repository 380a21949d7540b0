/**
 * `<stateDir>/update.json`, the updater's journal: the highest manifest sequence
 * ever attempted, the ids of recent manifests, and the record of the update in
 * progress (or the last one), whose `step` is written before that step starts so
 * recovery after a crash knows exactly which step was in flight.
 */
import { join } from 'node:path'
import { z } from 'zod'
import { ensureDir, readJsonIfExists, removeStaleTemps, writeJsonAtomic } from '../lib/index.ts'
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

export class UpdateJournal {
  readonly #path: string
  readonly #state: StateFile

  private constructor(path: string, state: StateFile) {
    this.#path = path
    this.#state = state
  }

  /** Reads the journal in `stateDir`, or starts an empty one (first start). */
  static async open(stateDir: string): Promise<UpdateJournal> {
    await ensureDir(stateDir)
    await removeStaleTemps(stateDir)
    const path = join(stateDir, 'update.json')
    const state = (await readJsonIfExists(path, stateSchema)) ?? {
      v: 1 as const,
      lastSequence: 0,
      recentIds: [],
      update: null,
    }
    return new UpdateJournal(path, state)
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

  /** Makes `record` the update in progress, counts its manifest as attempted, and writes both to disk. */
  async begin(record: UpdateRecord): Promise<void> {
    const id = record.manifestId
    this.#state.lastSequence = Math.max(this.#state.lastSequence, record.sequence)
    this.#state.recentIds = [...this.#state.recentIds.filter((r) => r !== id), id].slice(-RECENT_IDS)
    this.#state.update = record
    await this.persist()
  }

  /** Writes the journal (after changing the record) atomically. */
  async persist(): Promise<void> {
    await writeJsonAtomic(this.#path, this.#state)
  }
}
