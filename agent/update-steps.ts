/**
 * The steps of one update and the recovery of an interrupted one (the state
 * machine drawn in updater.ts). Each step is recorded in the journal before it
 * starts, then reported; from activation on, any failure or interruption rolls
 * back to the previous generation, so an unconfirmed generation never survives.
 *
 * Right before activation the manifest is verified once more, against the
 * revocation list as it is then (and only once the agent has heard the
 * coordinator's list since it started): a signer revoked during the download
 * is refused as `revoked` with nothing switched. A revocation that arrives
 * during the download stops it at once (`recheck`).
 * Once prepared, an update whose maintenance windows are all closed records
 * `waiting-for-window` (the log says when the next opens) and waits (update-window.ts).
 * What activations and health checks print also goes out live (update-log-stream.ts).
 */
import { stat } from 'node:fs/promises'
import { commandEnv, errorMessage, fromBase64, raceSignal, toBase64 } from '../lib/index.ts'
import type { ErrorInfo, Manifest } from '../protocol/index.ts'
import { ManifestRefusedError } from '../protocol/index.ts'
import { ActivatorError, type GenerationInfo } from './activator.ts'
import { runHealthCheck } from './health.ts'
import { type Step, type UpdateJournal, type UpdateRecord, updateError } from './update-journal.ts'
import { UpdateLogStream } from './update-log-stream.ts'
import { appendLog, UpdateReports } from './update-reports.ts'
import { UpdateWindow } from './update-window.ts'
import type { OfferOutcome, UpdaterInit } from './updater.ts'
import { type TrustContext, type VerifiedManifest, verifyManifest } from './verify.ts'

/** The trust context as it is now (it can change at run time: revocations). */
export function trustNow(trust: UpdaterInit['trust']): TrustContext {
  return typeof trust === 'function' ? trust() : trust
}

export class UpdateSteps {
  /** The generation active now, as far as the updater knows. */
  active: GenerationInfo | null
  readonly reports: UpdateReports
  readonly #init: UpdaterInit
  readonly #journal: UpdateJournal
  /** Aborts a download in flight; its reason is what the update then fails with. */
  readonly #signal: AbortSignal
  readonly #now: () => number
  /** Stops the update running now when its manifest is refused midway (recheck). */
  #stop: AbortController | null = null
  readonly #window: UpdateWindow
  readonly #live: UpdateLogStream

  constructor(init: UpdaterInit, journal: UpdateJournal, active: GenerationInfo | null, signal: AbortSignal) {
    this.#init = init
    this.#journal = journal
    this.active = active
    this.#signal = signal
    this.#now = init.now ?? Date.now
    this.#window = new UpdateWindow({
      now: this.#now,
      timeZone: init.timeZone,
      sleep: init.sleep,
      tags: () => trustNow(init.trust).tags,
      signal,
    })
    this.reports = new UpdateReports({
      deliver: init.report,
      onError: init.onError,
      active: () => this.active,
      now: this.#now,
      progressIntervalMs: init.progressIntervalMs ?? 1000,
    })
    const send = init.updateLog ?? (() => {})
    this.#live = new UpdateLogStream({ send, manifestId: () => journal.update?.manifestId ?? null })
  }

  /** Records a verified manifest as the update in progress and runs its steps. */
  async start(verified: VerifiedManifest): Promise<OfferOutcome> {
    const m = verified.manifest
    const previous = await this.#init.activator.current()
    this.active = previous
    const now = this.#now()
    const rec: UpdateRecord = {
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
    await this.#journal.begin(rec)
    await this.reports.step(rec)
    return this.#run(m)
  }

  /**
   * Waits out the window of an update left in `waiting-for-window` (by recover(),
   * or a wait cut by an offer that was then refused), then activates it.
   */
  async resume(): Promise<OfferOutcome | null> {
    const rec = this.#journal.update
    if (rec === null || rec.step !== 'waiting-for-window') return null
    const manifest = this.#reverify(rec)
    if (manifest instanceof ManifestRefusedError) return this.#refuse(manifest)
    return this.#run(manifest)
  }

  /** A newer manifest verified: the update waiting for its window gives way to it (ends 'superseded'). */
  supersedeWaiting(): void {
    this.#window.supersede()
  }

  /**
   * Finishes whatever a previous run left in the journal: redoes a step from before
   * activation, rolls back one from after. Null when there was nothing to finish.
   */
  async recover(): Promise<OfferOutcome | null> {
    const rec = this.#journal.update
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
        const manifest = this.#reverify(rec)
        if (manifest instanceof ManifestRefusedError)
          return this.#fail(updateError(manifest.code, `on resuming the update: ${manifest.message}`))
        if (rec.attempt >= max) {
          return this.#fail(
            updateError(
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
      case 'waiting-for-window': {
        // Nothing was switched. No attempt is counted (waiting cannot crash the agent), and the
        // wait itself goes on in the background (resume), so the agent's start is not held up.
        const manifest = this.#reverify(rec)
        if (manifest instanceof ManifestRefusedError) {
          return this.#fail(updateError(manifest.code, `on resuming the update: ${manifest.message}`))
        }
        await this.#enter((await this.#artifactUsable(rec)) ? 'waiting-for-window' : 'downloading')
        return this.#run(manifest, true)
      }
      case 'activating':
      case 'confirming': {
        const back = rec.previous === null ? 'no generation' : `generation "${rec.previous.name}"`
        return this.#rollback(
          updateError(
            'interrupted',
            `the agent stopped (crash, kill or power loss) while ${rec.step} generation "${rec.generation}"; ` +
              `rolled back to ${back} because the new one was never confirmed`,
          ),
        )
      }
      case 'rolling-back': {
        const original = rec.error ?? updateError('interrupted', 'the agent stopped during a rollback')
        if (rec.attempt >= max) {
          rec.error = updateError(
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

  /**
   * Verifies the update in flight again (the revocation list changed): if it is
   * refused now, its download stops and it ends refused. Steps past the download
   * are checked right before activation anyway.
   */
  recheck(): void {
    const rec = this.#journal.update
    if (rec?.step === 'waiting-for-window') this.#window.wake()
    const stop = this.#stop
    if (rec === null || stop === null || rec.step !== 'downloading') return
    const refusal = this.#verifyAgain(rec)
    if (refusal !== undefined) stop.abort(refusal)
  }

  /** The update's manifest verified as of now; the refusal, if it is refused. */
  #verifyAgain(rec: UpdateRecord): ManifestRefusedError | undefined {
    const verified = this.#reverify(rec)
    return verified instanceof ManifestRefusedError ? verified : undefined
  }

  #reverify(rec: UpdateRecord): Manifest | ManifestRefusedError {
    try {
      return verifyManifest(fromBase64(rec.envelope), {
        ...trustNow(this.#init.trust),
        lastSequence: rec.sequence - 1,
        now: this.#now(),
      }).manifest
    } catch (err) {
      if (!(err instanceof ManifestRefusedError)) throw err
      return err
    }
  }

  /** Right before activation: waits until the revocation list was heard since the start, then verifies again. */
  async #admitAgain(rec: UpdateRecord): Promise<OfferOutcome | undefined> {
    const synced = this.#init.revocationsSynced
    if (synced !== undefined) await raceSignal(synced(this.#signal), this.#signal)
    const refusal = this.#verifyAgain(rec)
    return refusal === undefined ? undefined : this.#refuse(refusal)
  }

  /** Ends the update refused (a failed update that never switched): its manifest is not acceptable any more. */
  async #refuse(err: ManifestRefusedError): Promise<OfferOutcome> {
    const rec = this.#journal.record()
    rec.error = updateError(err.code, `refused before activation, nothing was switched: ${err.message}`)
    await this.#enter('failed')
    return { outcome: 'refused', manifestId: rec.manifestId, error: rec.error }
  }

  /** Runs the update's steps; `recovering`: stop at `waiting-for-window` (resume() waits). */
  async #run(m: Manifest, recovering = false): Promise<OfferOutcome> {
    const stop = new AbortController()
    this.#stop = stop
    this.#window.reset()
    try {
      return await this.#steps(m, stop.signal, recovering)
    } finally {
      this.#stop = null
    }
  }

  async #steps(m: Manifest, stopped: AbortSignal, recovering: boolean): Promise<OfferOutcome> {
    const rec = this.#journal.record()
    const activator = this.#init.activator
    for (;;) {
      switch (rec.step) {
        case 'downloading': {
          let artifact: string
          try {
            const signal = AbortSignal.any([this.#signal, stopped])
            artifact = await activator.fetch(m, this.reports.progress(rec), signal, (line) => {
              rec.log = appendLog(rec.log, line)
              this.#live.line(line)
            })
          } catch (err) {
            if (this.#signal.aborted) throw this.#signal.reason
            if (stopped.aborted) return this.#refuse(stopped.reason as ManifestRefusedError)
            return this.#fail(activatorError(err, 'download-failed'))
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
            return this.#fail(activatorError(err, 'prepare-failed'))
          }
          rec.target = gen
          const window = this.#window.state(m)
          if (window.kind === 'closed') {
            const opens = new Date(window.opensAt).toISOString()
            rec.log = appendLog(
              rec.log,
              `waiting for a maintenance window: the next opens ${opens} (${this.#window.timeZone})`,
            )
            await this.#enter('waiting-for-window')
            break
          }
          const refused = await this.#admitAgain(rec)
          if (refused !== undefined) return refused
          await this.#enter('activating')
          break
        }
        case 'waiting-for-window': {
          if (recovering) return { outcome: 'waiting-for-window', manifestId: rec.manifestId, error: null }
          const ended = await this.#window.wait(m, () => this.#verifyAgain(rec))
          if (ended.kind === 'superseded') return { outcome: 'superseded', manifestId: m.id, error: null }
          if (ended.kind === 'refused') return this.#refuse(ended.refusal)
          const refused = await this.#admitAgain(rec)
          if (refused !== undefined) return refused
          await this.#enter('activating')
          break
        }
        case 'activating': {
          const target = rec.target
          if (target === null) {
            return this.#fail(updateError('prepare-failed', 'no prepared generation to activate'))
          }
          try {
            await activator.switchTo(target)
            this.active = target
            const result = await activator.activate(target, rec.previous, this.#live)
            rec.log = appendLog(rec.log, result.log)
            if (result.rebootRequired === true) rec.rebootRequired = true
          } catch (err) {
            rec.log = appendLog(rec.log, logOf(err))
            return this.#rollback(updateError('activation-failed', errorMessage(err)))
          }
          await this.#enter('confirming')
          break
        }
        case 'confirming': {
          const target = rec.target as GenerationInfo
          if (m.healthCheck !== null) {
            const env = commandEnv({
              ...this.#init.healthEnv,
              FLEETMESH_GENERATION: target.name,
              FLEETMESH_GENERATION_DIR: target.path,
            })
            try {
              await runHealthCheck(m.healthCheck, { cwd: target.path, env, output: this.#live })
            } catch (err) {
              return this.#rollback(
                updateError('health-check-failed', `generation "${target.name}": ${errorMessage(err)}`),
              )
            }
          }
          try {
            await this.#confirmWithin(m.confirmTimeoutMs)
          } catch (err) {
            return this.#rollback(updateError('confirm-timeout', errorMessage(err)))
          }
          await this.#enter('committed')
          await this.#gc([target, ...(rec.previous !== null ? [rec.previous] : [])])
          return { outcome: 'committed', manifestId: m.id, error: null }
        }
        case 'rolling-back':
          return this.#rollback(rec.error ?? updateError('interrupted', 'rollback was interrupted'))
        case 'committed':
        case 'rolled-back':
        case 'failed':
          return { outcome: rec.step, manifestId: rec.manifestId, error: rec.error }
      }
    }
  }

  async #fail(error: ErrorInfo): Promise<OfferOutcome> {
    const rec = this.#journal.record()
    rec.error = error
    // No gc here: nothing new was installed, and a partial download is worth keeping to resume.
    await this.#enter('failed')
    return { outcome: 'failed', manifestId: rec.manifestId, error }
  }

  async #rollback(error: ErrorInfo): Promise<OfferOutcome> {
    const rec = this.#journal.record()
    rec.error = error
    if (rec.step !== 'rolling-back') await this.#enter('rolling-back')
    // Whatever the new generation needed, the old one is running (or installed) again.
    delete rec.rebootRequired
    const activator = this.#init.activator
    const previous = rec.previous
    try {
      await activator.switchTo(previous)
      this.active = previous
      if (previous !== null)
        rec.log = appendLog(rec.log, (await activator.activate(previous, rec.target, this.#live)).log)
    } catch (err) {
      rec.log = appendLog(rec.log, logOf(err))
      this.active = await activator.current().catch(() => this.active)
      rec.error = updateError(
        'rollback-failed',
        `rolling back to ${previous === null ? 'no generation' : `generation "${previous.name}"`} after ` +
          `${error.code} failed: ${errorMessage(err)}. The original problem: ${error.message}`,
      )
      await this.#enter('failed')
      return { outcome: 'failed', manifestId: rec.manifestId, error: rec.error }
    }
    await this.#enter('rolled-back')
    await this.#gc(previous !== null ? [previous] : [])
    return { outcome: 'rolled-back', manifestId: rec.manifestId, error }
  }

  /** A fresh round trip to the coordinator, proving the new generation can still reach it. */
  async #confirmWithin(timeoutMs: number): Promise<void> {
    const controller = new AbortController()
    const timer = setTimeout(() => {
      controller.abort(
        new Error(
          `the coordinator did not confirm the new generation within ${timeoutMs} ms; ` +
            'it may not be able to reach the coordinator any more',
        ),
      )
    }, timeoutMs)
    const confirmed = this.#init.confirm(controller.signal).catch((err: unknown) => {
      throw new Error(`confirming with the coordinator failed: ${errorMessage(err)}`, { cause: err })
    })
    try {
      await raceSignal(confirmed, controller.signal)
    } finally {
      clearTimeout(timer)
      controller.abort()
    }
  }

  async #artifactUsable(rec: UpdateRecord): Promise<boolean> {
    if (rec.artifact !== null && (await stat(rec.artifact).catch(() => undefined)) !== undefined) return true
    // prepare() deletes the artifact once the generation exists, and finds that generation again.
    const gens = await this.#init.activator.list()
    return gens.some((g) => g.manifestId === rec.manifestId)
  }

  /** Records the step on disk before it starts, then reports it. */
  async #enter(step: Step, attempt = 1): Promise<void> {
    const rec = this.#journal.record()
    rec.step = step
    rec.attempt = attempt
    rec.updatedAt = this.#now()
    // The output so far goes out before the step's report; a final step ends the live log.
    this.#live.flush(step === 'committed' || step === 'rolled-back' || step === 'failed')
    await this.#journal.persist()
    await this.reports.step(rec)
  }

  async #gc(protect: GenerationInfo[]): Promise<void> {
    try {
      await this.#init.activator.gc(this.#init.keepGenerations ?? 5, protect)
    } catch (err) {
      this.#init.onError?.(err, 'removing old generations')
    }
  }
}

/** What a failed activation printed, for the update log. */
function logOf(err: unknown): string | undefined {
  return err instanceof ActivatorError ? err.log : undefined
}

function activatorError(err: unknown, fallback: string): ErrorInfo {
  if (err instanceof ActivatorError) return updateError(err.code, err.message)
  return updateError(fallback, errorMessage(err))
}
