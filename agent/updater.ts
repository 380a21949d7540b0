/**
 * The crash-safe update state machine (design principle 5, "safe apply").
 *
 *   idle → downloading → verified → [waiting-for-window →] activating → confirming → committed
 *                                                              └────────────┴──→ rolling-back → rolled-back
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
 * A manifest with maintenance windows (protocol/maintenance-window.ts) for the
 * machine's tags is downloaded and prepared at once, and waits in
 * `waiting-for-window` until one opens; a newer manifest cuts the wait short,
 * and after a restart the update waits again (in the background, so recovery
 * does not hold up the agent's start).
 *
 * This file takes offers one at a time and screens them; the steps and recovery
 * are in update-steps.ts, update.json in update-journal.ts, the status reports in
 * update-reports.ts. The activation itself is an {@link Activator} (activator.ts).
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
import { bytesEqual, fromBase64 } from '../lib/index.ts'
import type { ErrorInfo, StatusReport, UpdateState } from '../protocol/index.ts'
import { ManifestRefusedError } from '../protocol/index.ts'
import type { Activator, GenerationInfo } from './activator.ts'
import { UpdateJournal, updateError } from './update-journal.ts'
import type { UpdateLogChunk } from './update-log-stream.ts'
import { trustNow, UpdateSteps } from './update-steps.ts'
import { attemptedManifest, type TrustContext, type VerifiedManifest, verifyManifest } from './verify.ts'

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
  /**
   * Resolves once the agent has heard the coordinator's revocation list since it
   * started (agent/revocations.ts); nothing is activated before. Must honour the signal.
   */
  revocationsSynced?: (signal: AbortSignal) => Promise<void>
  now?: () => number
  /** The machine's IANA time zone, in which maintenance windows are read. Default: the system's. */
  timeZone?: string
  /** How the wait for a maintenance window sleeps; must reject when the signal aborts. Default: lib's sleep. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>
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
  /**
   * Takes the running update's output live, in bounded chunks (update-log-stream.ts);
   * best effort, must not throw. The final report carries the log durably anyway.
   */
  updateLog?: (chunk: UpdateLogChunk) => void
  /** Problems that do not stop the update (a report that could not be queued, gc). */
  onError?: (err: unknown, context: string) => void
}

/** 'waiting-for-window' only comes from recover(): the update then waits on in the background. */
export type OfferOutcomeKind =
  | 'committed'
  | 'rolled-back'
  | 'failed'
  | 'refused'
  | 'ignored'
  | 'superseded'
  | 'waiting-for-window'

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
  /**
   * Reports where the updater stands: the last update's step with its error and
   * log (so a failure stays visible across restarts until a new update starts),
   * or idle when no update was ever started.
   */
  reportCurrent(): Promise<void>
  /**
   * The revocation list changed: the update in flight is verified again, and one
   * whose signer is now revoked stops and ends refused.
   */
  revocationsChanged(): void
  /** Reports where the updater stands with this error: a problem outside any update (the revocation list). */
  reportProblem(error: ErrorInfo): Promise<void>
  /** Stops an in-flight download (it resumes on the next start) and waits for the updater to settle. */
  close(): Promise<void>
}

export class UpdaterClosedError extends Error {
  override name = 'UpdaterClosedError'
}

// ---------------------------------------------------------------- the updater

export async function createUpdater(init: UpdaterInit): Promise<Updater> {
  // The kept manifests are checked against the trust as it is now: the fleet root does not change.
  const journal = await UpdateJournal.open(init.stateDir, (envelope) =>
    attemptedManifest(envelope, trustNow(init.trust)),
  )
  const active = await init.activator.current()
  return new QueuedUpdater(init, journal, active)
}

interface QueuedOffer {
  envelope: Uint8Array
  resolve: (outcome: OfferOutcome) => void
  reject: (err: unknown) => void
}

/** Takes offers one at a time: screens them, and hands the newest acceptable one to the steps. */
class QueuedUpdater implements Updater {
  readonly #init: UpdaterInit
  readonly #journal: UpdateJournal
  readonly #steps: UpdateSteps
  readonly #now: () => number
  readonly #abort = new AbortController()
  #queue: QueuedOffer[] = []
  #draining: Promise<void> | null = null
  #recovery: Promise<OfferOutcome | null> | null = null
  #closed = false

  constructor(init: UpdaterInit, journal: UpdateJournal, active: GenerationInfo | null) {
    this.#init = init
    this.#journal = journal
    this.#steps = new UpdateSteps(init, journal, active, this.#abort.signal)
    this.#now = init.now ?? Date.now
  }

  current(): UpdaterStatus {
    const rec = this.#journal.update
    const active = this.#steps.active
    return {
      generation: active?.name ?? null,
      generationId: active?.id ?? null,
      state: rec?.step ?? 'idle',
      lastSequence: this.#journal.lastSequence,
      manifestId: rec?.manifestId ?? null,
    }
  }

  reportCurrent(): Promise<void> {
    const rec = this.#journal.update
    if (rec === null) return this.#steps.reports.send('idle', null, {})
    return this.#steps.reports.step(rec)
  }

  revocationsChanged(): void {
    this.#steps.recheck()
  }

  reportProblem(error: ErrorInfo): Promise<void> {
    const rec = this.#journal.update
    if (rec === null) return this.#steps.reports.send('idle', null, { error })
    const { manifestId: id, sequence, rolloutId, generation } = rec
    return this.#steps.reports.send(rec.step, { id, sequence, rolloutId, generation }, { error })
  }

  offer(envelope: Uint8Array): Promise<OfferOutcome> {
    if (this.#closed) return Promise.reject(new UpdaterClosedError('the updater is closed'))
    return new Promise((resolve, reject) => {
      this.#queue.push({ envelope: Uint8Array.from(envelope), resolve, reject })
      this.#cutWait(envelope)
      this.#kick()
    })
  }

  recover(): Promise<OfferOutcome | null> {
    this.#recovery ??= this.#steps.recover().then((outcome) => {
      // The wait for a maintenance window goes on in the background, where offers can cut it short.
      if (outcome?.outcome === 'waiting-for-window') this.#kick()
      return outcome
    })
    return this.#recovery
  }

  /**
   * A newer manifest that verifies cuts the wait for a maintenance window short, so
   * it is not queued behind an update that may wait for hours. The re-sent current
   * one (every reconnect) and anything refused leave the wait alone.
   */
  #cutWait(envelope: Uint8Array): void {
    const rec = this.#journal.update
    if (rec?.step !== 'waiting-for-window' || bytesEqual(fromBase64(rec.envelope), envelope)) return
    try {
      verifyManifest(envelope, {
        ...trustNow(this.#init.trust),
        lastSequence: this.#journal.lastSequence,
        now: this.#now(),
      })
    } catch {
      return
    }
    this.#steps.supersedeWaiting()
  }

  async close(): Promise<void> {
    this.#closed = true
    // Only a download is aborted; the update then ends with this error and resumes on the next start.
    this.#abort.abort(
      new UpdaterClosedError(
        'the updater was closed during the download or the wait for a maintenance window; it resumes on the next start',
      ),
    )
    await this.#draining?.catch(() => {})
    await this.#recovery?.catch(() => {})
    await this.#steps.reports.settled()
  }

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
    for (;;) {
      await this.#applyQueued()
      // An update waiting for its window (after a restart, or whose wait an offer refused later cut) waits on.
      if (this.#closed || this.#journal.update?.step !== 'waiting-for-window') return
      try {
        await this.#steps.resume()
      } catch (err) {
        if (!this.#closed) this.#init.onError?.(err, 'waiting for the maintenance window')
        return
      }
    }
  }

  async #applyQueued(): Promise<void> {
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
        best.item.resolve(await this.#steps.start(best.verified))
      } catch (err) {
        best.item.reject(err)
      }
    }
  }

  async #screen(envelope: Uint8Array): Promise<VerifiedManifest | OfferOutcome> {
    const rec = this.#journal.update
    // The coordinator re-sends the current manifest on every reconnect, also after it expired.
    if (rec !== null && bytesEqual(fromBase64(rec.envelope), envelope)) {
      return { outcome: 'ignored', manifestId: rec.manifestId, error: null }
    }
    try {
      return verifyManifest(envelope, {
        ...trustNow(this.#init.trust),
        lastSequence: this.#journal.lastSequence,
        now: this.#now(),
      })
    } catch (err) {
      if (!(err instanceof ManifestRefusedError)) throw err
      const manifest = err.manifest
      // Only the latest attempted manifest is re-sent by an honest coordinator (on every
      // reconnect); an older one coming back means someone is replaying it, so say so.
      if (err.code === 'replayed' && manifest !== null && this.#journal.lastId === manifest.id) {
        return { outcome: 'ignored', manifestId: manifest.id, error: null }
      }
      const error = updateError(err.code, err.message)
      await this.#steps.reports.send('refused', manifest, { error })
      return { outcome: 'refused', manifestId: manifest?.id ?? null, error }
    }
  }
}
