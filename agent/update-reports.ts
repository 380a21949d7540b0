/**
 * The updater's status reports: every step it enters, refusals, and throttled
 * download progress, each naming the generation active at that moment. Reports
 * are handed over one after another, so the network side queues them in the
 * order they happened. Step reports carry the update log so far (what was
 * fetched, what the activation printed), so the operator sees why an update
 * failed or rolled back; a report that cannot be handed over is passed to
 * `onError` and never stops the update.
 */
import { type ErrorInfo, MAX_REPORT_LOG, type Manifest, type UpdateState } from '../protocol/index.ts'
import type { FetchProgress, GenerationInfo } from './activator.ts'
import type { UpdateRecord } from './update-journal.ts'
import type { ReportBody } from './updater.ts'

/** The manifest fields a report names. */
export type ReportedManifest = Pick<Manifest, 'id' | 'sequence' | 'rolloutId' | 'generation'>

export interface UpdateReportsInit {
  deliver: (body: ReportBody) => Promise<void>
  onError?: ((err: unknown, context: string) => void) | undefined
  /** The generation active right now. */
  active: () => GenerationInfo | null
  now: () => number
  /** Minimum time between download progress reports. */
  progressIntervalMs: number
}

export class UpdateReports {
  readonly #init: UpdateReportsInit
  #delivered: Promise<void> = Promise.resolve()

  constructor(init: UpdateReportsInit) {
    this.#init = init
  }

  /** Queues a report behind earlier ones; resolves once it has been handed over (or failed). */
  send(
    state: UpdateState,
    manifest: ReportedManifest | null,
    extra: {
      error?: ErrorInfo | null
      progress?: FetchProgress | null
      log?: string | undefined
      rebootRequired?: boolean | undefined
    },
  ): Promise<void> {
    const active = this.#init.active()
    const body: ReportBody = {
      state,
      currentGeneration: active?.name ?? null,
      desiredGeneration: manifest?.generation ?? null,
      manifestId: manifest?.id ?? null,
      manifestSequence: manifest?.sequence ?? null,
      rolloutId: manifest?.rolloutId ?? null,
      progress: extra.progress ?? null,
      error: extra.error ?? null,
      facts: active !== null ? { generationId: active.id } : {},
      ...(extra.log ? { log: extra.log } : {}),
      ...(extra.rebootRequired === true ? { rebootRequired: true } : {}),
    }
    this.#delivered = this.#delivered.then(() =>
      this.#init.deliver(body).catch((err: unknown) => this.#init.onError?.(err, `report "${state}"`)),
    )
    return this.#delivered
  }

  /** Reports the step `rec` is in, with its error in the steps that end an update badly. */
  step(rec: UpdateRecord): Promise<void> {
    const error =
      rec.step === 'rolling-back' || rec.step === 'rolled-back' || rec.step === 'failed' ? rec.error : null
    return this.send(rec.step, reportedManifest(rec), {
      error,
      log: rec.log,
      rebootRequired: rec.rebootRequired,
    })
  }

  /** A progress callback for `rec`'s download: at most one report per interval, plus the last one. */
  progress(rec: UpdateRecord): (progress: FetchProgress) => void {
    const manifest = reportedManifest(rec)
    let last = Number.NEGATIVE_INFINITY
    let lastDone = -1
    return (progress) => {
      const now = this.#init.now()
      const finished = progress.done === progress.total && progress.done !== lastDone
      if (!finished && now - last < this.#init.progressIntervalMs) return
      last = now
      lastDone = progress.done
      void this.send('downloading', manifest, { progress: { ...progress } })
    }
  }

  /** Resolves when every report queued so far has been handed over (or failed). */
  settled(): Promise<void> {
    return this.#delivered
  }
}

/**
 * `log` with `text` appended as a new line, cut to its last MAX_REPORT_LOG
 * characters: the end of an update log is where its outcome is.
 */
export function appendLog(log: string | undefined, text: string | undefined): string | undefined {
  const line = text?.trimEnd()
  if (line === undefined || line === '') return log
  const joined = log === undefined || log === '' ? line : `${log}\n${line}`
  return joined.length <= MAX_REPORT_LOG ? joined : `…${joined.slice(joined.length - MAX_REPORT_LOG + 1)}`
}

function reportedManifest(rec: UpdateRecord): ReportedManifest {
  return { id: rec.manifestId, sequence: rec.sequence, rolloutId: rec.rolloutId, generation: rec.generation }
}
