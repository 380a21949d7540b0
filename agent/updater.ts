/**
 * The crash-safe update state machine (design principle 5, "safe apply").
 *
 *   idle → downloading → verified → activating → confirming → committed
 *                                        └────────────┴──→ rolling-back → rolled-back
 *   failed:  could not download, verify or unpack; nothing was switched
 *   refused: the manifest did not verify; nothing was changed at all
 *
 * The update record is written to `<stateDir>/update.json` before each step
 * starts, so after a crash or power cut `recover()` knows exactly which step was
 * in flight and finishes on a whole generation: before activation the old
 * generation is still active and the step is redone; from activation on, the
 * agent cannot know how far the switch got, so it rolls back to the previous
 * generation (re-activating it) — an unconfirmed generation never survives a restart.
 *
 * @example
 *
 * ```ts
 * const updater = await createUpdater({
 *   stateDir, activator, trust: { fleetRoot, fleetId, machine, tags },
 *   confirm: (signal) => connection.roundTrip(signal),
 *   report: (status) => reporter.send(status),
 * })
 * await updater.recover()
 * connection.onManifest((envelope) => void updater.offer(envelope))
 * ```
 */
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import {
  bytesEqual,
  ensureDir,
  fromBase64,
  readJsonIfExists,
  removeStaleTemps,
  toBase64,
  writeJsonAtomic,
} from '../lib/index.ts'
import type { Manifest } from '../protocol/index.ts'
import {
  type ErrorInfo,
  errorInfo,
  MAX_ERROR_MESSAGE,
  type StatusReport,
  type UpdateState,
} from '../protocol/index.ts'
import { runHealthCheck } from './health.ts'
import {
  type Activator,
  ActivatorError,
  type FetchProgress,
  type GenerationInfo,
  generationInfoSchema,
} from './profile-activator.ts'
import { ManifestRefusedError, type TrustContext, type VerifiedManifest, verifyManifest } from './verify.ts'

/** A status report as the updater produces it; the network side adds v, seq, machine and timestamp, and signs it. */
export type ReportBody = Omit<StatusReport, 'v' | 'seq' | 'machine' | 'timestamp'>

export interface UpdaterInit {
  stateDir: string
  /** What manifests are verified against; a function if it can change at run time (revocations). */
  trust: TrustContext | (() => TrustContext)
  activator: Activator
  /**
   * A fresh authenticated round-trip to the coordinator after activation. Resolving
   * proves the new generation can still reach it; must honour the signal.
   */
  confirm: (signal: AbortSignal) => Promise<void>
  /** Delivers a report (the network side signs and queues it). Failures are passed to onError, never fatal. */
  report: (status: ReportBody) => Promise<void>
  now?: () => number
  /** Minimum time between download progress reports. Default 1000 ms. */
  progressIntervalMs?: number
  /** Generations to keep installed. Default 5. */
  keepGenerations?: number
  /**
   * How many times recovery retries a step that was interrupted, so a step that
   * crashes the agent cannot trap it in a restart loop. Default 5.
   */
  maxAttempts?: number
  /** Extra environment for health checks. */
  healthEnv?: Record<string, string>
  /** Problems that do not stop the update (a report that could not be queued, gc). */
  onError?: (err: unknown, context: string) => void
}

export type OfferOutcomeKind = 'committed' | 'rolled-back' | 'failed' | 'refused' | 'ignored' | 'superseded'

export interface OfferOutcome {
  outcome: OfferOutcomeKind
  manifestId: string | null
  error: ErrorInfo | null
}

export interface UpdaterStatus {
  /** Name of the active generation, or null when none is. */
  generation: string | null
  /** The activator's id of the active generation. */
  generationId: string | null
  state: UpdateState
  /** Highest manifest sequence ever attempted; only higher ones are accepted. */
  lastSequence: number
  manifestId: string | null
}

export interface Updater {
  /** Verifies and applies a manifest envelope; offers are applied one at a time. */
  offer(envelope: Uint8Array): Promise<OfferOutcome>
  /**
   * Finishes whatever a previous run left in update.json; resolves with its outcome,
   * or null when there was nothing to finish. offer() runs it first if not called.
   */
  recover(): Promise<OfferOutcome | null>
  current(): UpdaterStatus
  /** Stops an in-flight download (it resumes on the next start) and waits for the updater to settle. */
  close(): Promise<void>
}

export class UpdaterClosedError extends Error {
  override name = 'UpdaterClosedError'
}

// ---------------------------------------------------------------- update.json

const STEPS = [
  'downloading',
  'verified',
  'activating',
  'confirming',
  'committed',
  'rolling-back',
  'rolled-back',
  'failed',
] as const satisfies readonly UpdateState[]
type Step = (typeof STEPS)[number]

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
})
type UpdateRecord = z.infer<typeof recordSchema>

const RECENT_IDS = 32

const stateSchema = z.strictObject({
  v: z.literal(1),
  lastSequence: z.number().int().nonnegative(),
  /** Ids of recently attempted manifests: a re-delivery of one of them is ignored rather than refused. */
  recentIds: z.array(z.string()).max(RECENT_IDS),
  update: recordSchema.nullable(),
})
type StateFile = z.infer<typeof stateSchema>

function info(code: string, message: string): ErrorInfo {
  return {
    code: code.slice(0, 64),
    message: message.length > MAX_ERROR_MESSAGE ? `${message.slice(0, MAX_ERROR_MESSAGE - 1)}…` : message,
  }
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err))

// ---------------------------------------------------------------- the updater

export async function createUpdater(init: UpdaterInit): Promise<Updater> {
  await ensureDir(init.stateDir)
  await removeStaleTemps(init.stateDir)
  const path = join(init.stateDir, 'update.json')
  const state = (await readJsonIfExists(path, stateSchema)) ?? {
    v: 1 as const,
    lastSequence: 0,
    recentIds: [],
    update: null,
  }
  const active = await init.activator.current()
  return new StateMachine(init, path, state, active)
}

interface QueuedOffer {
  envelope: Uint8Array
  resolve: (outcome: OfferOutcome) => void
  reject: (err: unknown) => void
}

type ManifestLike = Pick<Manifest, 'id' | 'sequence' | 'rolloutId' | 'generation'>

class StateMachine implements Updater {
  readonly #init: UpdaterInit
  readonly #path: string
  readonly #state: StateFile
  readonly #now: () => number
  readonly #abort = new AbortController()
  #active: GenerationInfo | null
  #queue: QueuedOffer[] = []
  #draining: Promise<void> | null = null
  #recovery: Promise<OfferOutcome | null> | null = null
  #reports: Promise<void> = Promise.resolve()
  #closed = false

  constructor(init: UpdaterInit, path: string, state: StateFile, active: GenerationInfo | null) {
    this.#init = init
    this.#path = path
    this.#state = state
    this.#active = active
    this.#now = init.now ?? Date.now
  }

  current(): UpdaterStatus {
    const rec = this.#state.update
    return {
      generation: this.#active?.name ?? null,
      generationId: this.#active?.id ?? null,
      state: rec?.step ?? 'idle',
      lastSequence: this.#state.lastSequence,
      manifestId: rec?.manifestId ?? null,
    }
  }

  offer(envelope: Uint8Array): Promise<OfferOutcome> {
    if (this.#closed) return Promise.reject(new UpdaterClosedError('the updater is closed'))
    return new Promise((resolve, reject) => {
      this.#queue.push({ envelope: Uint8Array.from(envelope), resolve, reject })
      this.#kick()
    })
  }

  recover(): Promise<OfferOutcome | null> {
    this.#recovery ??= this.#recover()
    return this.#recovery
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#abort.abort()
    await this.#draining?.catch(() => {})
    await this.#recovery?.catch(() => {})
    await this.#reports
  }

  // ---------------------------------------------------------------- offers

  #kick(): void {
    if (this.#draining !== null) return
    this.#draining = this.#drain().finally(() => {
      this.#draining = null
      if (this.#queue.length > 0) this.#kick()
    })
  }

  async #drain(): Promise<void> {
    try {
      await this.recover()
    } catch (err) {
      for (const item of this.#queue.splice(0)) item.reject(err)
      return
    }
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0)
      const candidates: { item: QueuedOffer; verified: VerifiedManifest }[] = []
      for (const item of batch) {
        try {
          const screened = await this.#screen(item.envelope)
          if ('outcome' in screened) item.resolve(screened)
          else candidates.push({ item, verified: screened })
        } catch (err) {
          item.reject(err)
        }
      }
      if (candidates.length === 0) continue
      // Offers that piled up while an update ran: only the newest is worth applying.
      candidates.sort((a, b) => b.verified.manifest.sequence - a.verified.manifest.sequence)
      const [best, ...rest] = candidates as [(typeof candidates)[number], ...typeof candidates]
      for (const other of rest) {
        const id = other.verified.manifest.id
        other.item.resolve({
          outcome: id === best.verified.manifest.id ? 'ignored' : 'superseded',
          manifestId: id,
          error: null,
        })
      }
      try {
        best.item.resolve(await this.#apply(best.verified))
      } catch (err) {
        best.item.reject(err)
      }
    }
  }

  async #screen(envelope: Uint8Array): Promise<VerifiedManifest | OfferOutcome> {
    const rec = this.#state.update
    // The coordinator re-sends the current manifest on every reconnect, also after it expired.
    if (rec !== null && bytesEqual(fromBase64(rec.envelope), envelope)) {
      return { outcome: 'ignored', manifestId: rec.manifestId, error: null }
    }
    try {
      return verifyManifest(envelope, {
        ...this.#trust(),
        lastSequence: this.#state.lastSequence,
        now: this.#now(),
      })
    } catch (err) {
      if (!(err instanceof ManifestRefusedError)) throw err
      const manifest = err.manifest
      // Only the latest attempted manifest is re-sent by an honest coordinator (on every
      // reconnect); an older one coming back means someone is replaying it, so say so.
      if (err.code === 'replayed' && manifest !== null && this.#state.recentIds.at(-1) === manifest.id) {
        return { outcome: 'ignored', manifestId: manifest.id, error: null }
      }
      const error = info(err.code, err.message)
      await this.#report('refused', manifest, { error })
      return { outcome: 'refused', manifestId: manifest?.id ?? null, error }
    }
  }

  async #apply(verified: VerifiedManifest): Promise<OfferOutcome> {
    const m = verified.manifest
    const previous = await this.#init.activator.current()
    this.#active = previous
    const now = this.#now()
    this.#state.lastSequence = Math.max(this.#state.lastSequence, m.sequence)
    this.#state.recentIds = [...this.#state.recentIds.filter((id) => id !== m.id), m.id].slice(-RECENT_IDS)
    this.#state.update = {
      manifestId: m.id,
      sequence: m.sequence,
      rolloutId: m.rolloutId,
      generation: m.generation,
      envelope: toBase64(verified.envelope),
      step: 'downloading',
      attempt: 1,
      artifact: null,
      target: null,
      previous,
      startedAt: now,
      updatedAt: now,
      error: null,
    }
    await this.#persist()
    await this.#reportStep()
    return this.#run(m)
  }

  // ---------------------------------------------------------------- the steps

  async #run(m: Manifest): Promise<OfferOutcome> {
    const rec = this.#record()
    const activator = this.#init.activator
    for (;;) {
      switch (rec.step) {
        case 'downloading': {
          let artifact: string
          try {
            artifact = await activator.fetch(m, this.#progressReporter(), this.#abort.signal)
          } catch (err) {
            if (this.#abort.signal.aborted) {
              throw new UpdaterClosedError(
                'the updater was closed during the download; it resumes on the next start',
              )
            }
            return this.#fail(this.#activatorError(err, 'download-failed'))
          }
          rec.artifact = artifact
          await this.#enter('verified')
          break
        }
        case 'verified': {
          let gen: GenerationInfo
          try {
            gen = await activator.prepare(m, rec.artifact ?? '')
          } catch (err) {
            return this.#fail(this.#activatorError(err, 'prepare-failed'))
          }
          rec.target = gen
          await this.#enter('activating')
          break
        }
        case 'activating': {
          const target = rec.target
          if (target === null) return this.#fail(info('prepare-failed', 'no prepared generation to activate'))
          try {
            await activator.switchTo(target)
            this.#active = target
            await activator.activate(target, rec.previous)
          } catch (err) {
            return this.#rollback(info('activation-failed', messageOf(err)))
          }
          await this.#enter('confirming')
          break
        }
        case 'confirming': {
          const target = rec.target as GenerationInfo
          if (m.healthCheck !== null) {
            try {
              await runHealthCheck(m.healthCheck, { cwd: target.path, env: this.#healthEnv(target) })
            } catch (err) {
              return this.#rollback(
                info('health-check-failed', `generation "${target.name}": ${messageOf(err)}`),
              )
            }
          }
          try {
            await this.#confirmWithin(m.confirmTimeoutMs)
          } catch (err) {
            return this.#rollback(info('confirm-timeout', messageOf(err)))
          }
          await this.#enter('committed')
          await this.#gc([target, ...(rec.previous !== null ? [rec.previous] : [])])
          return { outcome: 'committed', manifestId: m.id, error: null }
        }
        case 'rolling-back':
          return this.#rollback(rec.error ?? info('interrupted', 'rollback was interrupted'))
        case 'committed':
        case 'rolled-back':
        case 'failed':
          return { outcome: rec.step, manifestId: rec.manifestId, error: rec.error }
      }
    }
  }

  async #fail(error: ErrorInfo): Promise<OfferOutcome> {
    const rec = this.#record()
    rec.error = error
    // No gc here: nothing new was installed, and a partial download is worth keeping to resume.
    await this.#enter('failed')
    return { outcome: 'failed', manifestId: rec.manifestId, error }
  }

  async #rollback(error: ErrorInfo): Promise<OfferOutcome> {
    const rec = this.#record()
    rec.error = error
    if (rec.step !== 'rolling-back') await this.#enter('rolling-back')
    const activator = this.#init.activator
    const previous = rec.previous
    try {
      await activator.switchTo(previous)
      this.#active = previous
      if (previous !== null) await activator.activate(previous, rec.target)
    } catch (err) {
      this.#active = await activator.current().catch(() => this.#active)
      rec.error = info(
        'rollback-failed',
        `rolling back to ${previous === null ? 'no generation' : `generation "${previous.name}"`} after ` +
          `${error.code} failed: ${messageOf(err)}. The original problem: ${error.message}`,
      )
      await this.#enter('failed')
      return { outcome: 'failed', manifestId: rec.manifestId, error: rec.error }
    }
    await this.#enter('rolled-back')
    await this.#gc(previous !== null ? [previous] : [])
    return { outcome: 'rolled-back', manifestId: rec.manifestId, error }
  }

  async #confirmWithin(timeoutMs: number): Promise<void> {
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort()
        reject(
          new Error(
            `the coordinator did not confirm the new generation within ${timeoutMs} ms; ` +
              'it may not be able to reach the coordinator any more',
          ),
        )
      }, timeoutMs)
    })
    try {
      await Promise.race([
        this.#init.confirm(controller.signal).catch((err: unknown) => {
          throw new Error(`confirming with the coordinator failed: ${messageOf(err)}`, { cause: err })
        }),
        timeout,
      ])
    } finally {
      clearTimeout(timer)
      controller.abort()
    }
  }

  // ---------------------------------------------------------------- recovery

  async #recover(): Promise<OfferOutcome | null> {
    const rec = this.#state.update
    if (rec === null) return null
    const max = this.#init.maxAttempts ?? 5
    switch (rec.step) {
      case 'committed':
      case 'rolled-back':
      case 'failed':
        return null
      case 'downloading':
      case 'verified': {
        // The old generation is still active. Re-verify first: the manifest may have
        // expired, or its signer been revoked, while the agent was down.
        let manifest: Manifest
        try {
          manifest = verifyManifest(fromBase64(rec.envelope), {
            ...this.#trust(),
            lastSequence: rec.sequence - 1,
            now: this.#now(),
          }).manifest
        } catch (err) {
          if (!(err instanceof ManifestRefusedError)) throw err
          return this.#fail(info(err.code, `on resuming the update: ${err.message}`))
        }
        if (rec.attempt >= max) {
          return this.#fail(
            info(
              'too-many-attempts',
              `step "${rec.step}" was interrupted ${rec.attempt} times; giving up on this update`,
            ),
          )
        }
        let step: Step = rec.step
        if (step === 'verified' && !(await this.#artifactUsable(rec))) step = 'downloading'
        await this.#enter(step, rec.attempt + 1)
        return this.#run(manifest)
      }
      case 'activating':
      case 'confirming': {
        const back = rec.previous === null ? 'no generation' : `generation "${rec.previous.name}"`
        return this.#rollback(
          info(
            'interrupted',
            `the agent stopped (crash, kill or power loss) while ${rec.step} generation "${rec.generation}"; ` +
              `rolled back to ${back} because the new one was never confirmed`,
          ),
        )
      }
      case 'rolling-back': {
        const original = rec.error ?? info('interrupted', 'the agent stopped during a rollback')
        if (rec.attempt >= max) {
          rec.error = info(
            'rollback-failed',
            `rollback was interrupted ${rec.attempt} times; giving up. The original problem: ${original.message}`,
          )
          await this.#enter('failed')
          return { outcome: 'failed', manifestId: rec.manifestId, error: rec.error }
        }
        await this.#enter('rolling-back', rec.attempt + 1)
        return this.#rollback(original)
      }
    }
  }

  async #artifactUsable(rec: UpdateRecord): Promise<boolean> {
    if (rec.artifact !== null && (await stat(rec.artifact).catch(() => undefined)) !== undefined) return true
    // prepare() deletes the artifact once the generation exists, and finds that generation again.
    const gens = await this.#init.activator.list()
    return gens.some((g) => g.manifestId === rec.manifestId)
  }

  // ---------------------------------------------------------------- state and reports

  #record(): UpdateRecord {
    const rec = this.#state.update
    if (rec === null) throw new Error('no update in progress')
    return rec
  }

  #trust(): TrustContext {
    const trust = this.#init.trust
    return typeof trust === 'function' ? trust() : trust
  }

  async #persist(): Promise<void> {
    await writeJsonAtomic(this.#path, this.#state)
  }

  /** Records the step on disk before it starts, then reports it. */
  async #enter(step: Step, attempt = 1): Promise<void> {
    const rec = this.#record()
    rec.step = step
    rec.attempt = attempt
    rec.updatedAt = this.#now()
    await this.#persist()
    await this.#reportStep()
  }

  #reportStep(): Promise<void> {
    const rec = this.#record()
    const manifest = {
      id: rec.manifestId,
      sequence: rec.sequence,
      rolloutId: rec.rolloutId,
      generation: rec.generation,
    }
    const error =
      rec.step === 'rolling-back' || rec.step === 'rolled-back' || rec.step === 'failed' ? rec.error : null
    return this.#report(rec.step, manifest, { error })
  }

  /** Queues a report behind earlier ones, so they reach the network side in order. */
  #report(
    state: UpdateState,
    manifest: ManifestLike | null,
    extra: { error?: ErrorInfo | null; progress?: FetchProgress | null },
  ): Promise<void> {
    const body: ReportBody = {
      state,
      currentGeneration: this.#active?.name ?? null,
      desiredGeneration: manifest?.generation ?? null,
      manifestId: manifest?.id ?? null,
      manifestSequence: manifest?.sequence ?? null,
      rolloutId: manifest?.rolloutId ?? null,
      progress: extra.progress ?? null,
      error: extra.error ?? null,
      facts: this.#active !== null ? { generationId: this.#active.id } : {},
    }
    this.#reports = this.#reports.then(() =>
      this.#init.report(body).catch((err: unknown) => this.#init.onError?.(err, `report "${state}"`)),
    )
    return this.#reports
  }

  #progressReporter(): (progress: FetchProgress) => void {
    const interval = this.#init.progressIntervalMs ?? 1000
    const rec = this.#record()
    const manifest = {
      id: rec.manifestId,
      sequence: rec.sequence,
      rolloutId: rec.rolloutId,
      generation: rec.generation,
    }
    let last = Number.NEGATIVE_INFINITY
    let lastDone = -1
    return (progress) => {
      const now = this.#now()
      const finished = progress.done === progress.total && progress.done !== lastDone
      if (!finished && now - last < interval) return
      last = now
      lastDone = progress.done
      void this.#report('downloading', manifest, { progress: { ...progress } })
    }
  }

  #activatorError(err: unknown, fallback: string): ErrorInfo {
    if (err instanceof ActivatorError) return info(err.code, err.message)
    return info(fallback, messageOf(err))
  }

  #healthEnv(target: GenerationInfo): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: process.env.HOME ?? '/',
      LANG: process.env.LANG ?? 'C.UTF-8',
      ...this.#init.healthEnv,
      FLEETMESH_GENERATION: target.name,
      FLEETMESH_GENERATION_DIR: target.path,
    }
  }

  async #gc(protect: GenerationInfo[]): Promise<void> {
    try {
      await this.#init.activator.gc(this.#init.keepGenerations ?? 5, protect)
    } catch (err) {
      this.#init.onError?.(err, 'removing old generations')
    }
  }
}
