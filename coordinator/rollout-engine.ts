/**
 * Moves rollouts in waves on. The admin signs one manifest for all targets; the
 * coordinator only decides when each machine gets it, by making it the
 * machine's desired state wave by wave (withholding is already within its
 * power; it cannot sign). A wave is settled when each of its machines committed,
 * failed, or stayed offline past the policy's offline timeout (skipped: it
 * still gets the release when it returns, unless the rollout halted). Once a
 * wave settled it must stay healthy for the soak time before the next starts.
 * More failures than the policy allows, in the wave or overall, halt the
 * rollout: machines of started waves that never took the release have it
 * withheld again (their previous desired manifest back), and with onFailure
 * 'rollback' the held rollback manifests (signed by the admin at deploy time)
 * go to the machines that took it. The halt and its reason are audited.
 *
 * Driven by status events and one timer per rollout (the next soak end or
 * offline timeout), never by polling. Every transition is one store
 * transaction guarded by the state and wave it started from, and the engine
 * recomputes everything from the store, so a coordinator killed at any point
 * resumes where it was on start-up. With several coordinators on one store only
 * the holder of the rollout lease evaluates; since every transition is guarded,
 * a lease lost and taken over mid-step costs at most a refused transition.
 */
import { CodedError } from '../lib/index.ts'
import {
  failureLimit,
  type RolloutMachineOutcome,
  type RolloutView,
  type UpdateState,
} from '../protocol/index.ts'
import type { FleetEvents } from './events.ts'
import type { DesiredChange, FleetStore, NewRollout, RolloutChange, RolloutRecord } from './store.ts'

export interface RolloutEngineInit {
  store: FleetStore
  events: FleetEvents
  /** Pushes these machines' desired manifests to those connected. */
  push: (machines: readonly string[]) => Promise<void>
  online: (machine: string) => boolean
  /** Records a change the engine made on its own in the audit log. */
  audit: (action: string, detail: string) => Promise<void>
  log: (msg: string) => void
  now?: () => number
  /**
   * Several coordinators share the store: this one moves rollouts on only while
   * it holds the rollout lease (between lead() and standBy(), see cluster.ts);
   * meanwhile it still creates and controls rollouts, which the leader learns of
   * from the store's notes (noteChanged).
   */
  standby?: boolean
}

export type RolloutAction = 'pause' | 'resume' | 'abort'

/** Update states after which a machine is done with the release, for better or worse. */
const FAILED: readonly UpdateState[] = ['failed', 'rolled-back', 'refused']

export class RolloutEngine {
  readonly #init: RolloutEngineInit
  readonly #now: () => number
  readonly #chains = new Map<string, Promise<unknown>>()
  readonly #queued = new Set<string>()
  readonly #timers = new Map<string, NodeJS.Timeout>()
  readonly #active = new Set<string>()
  readonly #listeners = new Set<(view: RolloutRecord) => void>()
  #unsubscribe: (() => void) | undefined
  #stopped = false
  #leading: boolean

  constructor(init: RolloutEngineInit) {
    this.#init = init
    this.#now = init.now ?? Date.now
    this.#leading = init.standby !== true
  }

  /** Resumes every stored running or paused rollout, and follows status reports from now on. */
  async start(): Promise<void> {
    this.#unsubscribe = this.#init.events.on((event) => {
      if (event.type === 'offline') {
        // a pending machine that drops out after the offline timeout now counts as skipped
        for (const id of this.#active) this.#kick(id)
        return
      }
      if (event.type !== 'status') return
      const id = event.status.report.rolloutId
      if (id !== null && this.#active.has(id)) this.#kick(id)
    })
    if (this.#leading) await this.#resume()
  }

  async #resume(): Promise<void> {
    for (const r of await this.#init.store.rollouts.active()) {
      this.#active.add(r.id)
      this.#kick(r.id)
    }
  }

  /** This coordinator took the rollout lease: it resumes every stored running or paused rollout. */
  async lead(): Promise<void> {
    if (this.#stopped || this.#leading) return
    this.#leading = true
    this.#init.log('rollouts: this coordinator now moves rollouts on')
    await this.#resume()
  }

  /** Notes about rollouts may have been missed (cluster.ts resync): the leader re-reads every active one. */
  async recheck(): Promise<void> {
    if (this.#leading && !this.#stopped) await this.#resume()
  }

  /** The lease is lost: another coordinator may move the rollouts on now, so this one stops. */
  standBy(): void {
    if (!this.#leading) return
    this.#leading = false
    this.#init.log('rollouts: lease lost; another coordinator moves rollouts on')
    for (const id of [...this.#active]) this.#forget(id)
  }

  /** Another coordinator stored a change of the rollout: watch streams see it, and the leader acts on it. */
  async noteChanged(id: string): Promise<void> {
    const r = await this.#init.store.rollouts.get(id)
    if (r === undefined) return
    this.#changed(r)
    if (!this.#leading || (r.state !== 'running' && r.state !== 'paused')) return
    this.#active.add(id)
    this.#kick(id)
  }

  /** Stops timers and event handling; transitions under way finish. */
  async stop(): Promise<void> {
    this.#stopped = true
    this.#unsubscribe?.()
    for (const t of this.#timers.values()) clearTimeout(t)
    this.#timers.clear()
    await Promise.allSettled([...this.#chains.values()])
  }

  /** Resolves once the evaluations of the rollout queued so far are done. */
  async idle(id: string): Promise<void> {
    while (true) {
      const chain = this.#chains.get(id)
      await chain?.catch(() => {})
      if (this.#chains.get(id) === chain) return
    }
  }

  /** Called with a rollout after each change of it (for watch streams). */
  onChange(listener: (rollout: RolloutRecord) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Stores a new rollout (its first wave's desired states with it) and pushes the first wave. */
  async create(input: NewRollout): Promise<RolloutRecord> {
    const record = await this.#init.store.rollouts.create(input)
    await this.started(record)
    return record
  }

  /** Takes on a rollout just stored (by create, or with others by a fleet file's apply): its first wave goes out. */
  async started(record: RolloutRecord): Promise<void> {
    this.#active.add(record.id)
    this.#changed(record)
    await this.#init.push(record.plan[0] ?? [])
    this.#kick(record.id)
  }

  /** pause, resume or abort, in turn with the engine's own transitions of the rollout. */
  control(id: string, action: RolloutAction, by: string): Promise<RolloutRecord> {
    return this.#serial(id, async () => {
      const r = await this.#init.store.rollouts.get(id)
      if (r === undefined) throw new RolloutControlError('unknown-rollout', `no rollout ${id} in waves`)
      const from = { pause: ['running'], resume: ['paused'], abort: ['running', 'paused'] }[action]
      if (!from.includes(r.state))
        throw new RolloutControlError(
          'rollout-state',
          `rollout ${id} is ${r.state}, so it cannot ${action}; only a rollout that is ${from.join(' or ')} can`,
        )
      const reason = `${action} by ${by}`
      if (action === 'abort') return this.#stopRollout(r, 'aborted', reason, false)
      const state = action === 'pause' ? 'paused' : 'running'
      const next = await this.#transition(r, { state, reason: action === 'pause' ? reason : null }, [])
      if (next === undefined)
        throw new RolloutControlError('rollout-state', `rollout ${id} changed meanwhile`)
      if (action === 'resume') this.#kick(id)
      return next
    })
  }

  /** Where the rollout stands, machine by machine. */
  async view(r: RolloutRecord): Promise<RolloutView> {
    const outcomes = await this.#outcomes(r)
    const counts = { waiting: 0, pending: 0, done: 0, failed: 0, skipped: 0, withheld: 0 }
    const machines = r.plan.flatMap((wave, k) =>
      wave.map((name) => {
        const outcome = outcomes.get(name) ?? 'waiting'
        counts[outcome]++
        return { name, wave: k, outcome }
      }),
    )
    const release = await this.#init.store.getManifest(r.manifestId)
    return {
      rolloutId: r.id,
      manifestId: r.manifestId,
      generation: release?.generation ?? '',
      state: r.state,
      reason: r.reason,
      policy: r.policy,
      wave: r.wave,
      waves: r.plan.length,
      createdAt: r.createdAt,
      waveStartedAt: r.waveStartedAt,
      soakStartedAt: r.soakStartedAt,
      rolledBack: r.rolledBack,
      counts,
      machines,
    }
  }

  /** Each machine's outcome: of started waves from its reports about the rollout, of later ones waiting. */
  async #outcomes(r: RolloutRecord): Promise<Map<string, RolloutMachineOutcome>> {
    const out = new Map<string, RolloutMachineOutcome>()
    const stopped = r.state === 'halted' || r.state === 'aborted'
    const timedOut = this.#now() - r.waveStartedAt >= r.policy.offlineTimeoutMs
    for (let k = 0; k <= r.wave && k < r.plan.length; k++) {
      for (const name of r.plan[k] ?? []) {
        const state = (await this.#init.store.latestRolloutReport(name, r.id))?.report.state
        if (state === 'committed') out.set(name, 'done')
        else if (state !== undefined && FAILED.includes(state)) out.set(name, 'failed')
        else if (state !== undefined) out.set(name, 'pending')
        else if (stopped) out.set(name, 'withheld')
        // An earlier wave's machine still offline was skipped when that wave settled.
        else if (!this.#init.online(name) && (k < r.wave || timedOut)) out.set(name, 'skipped')
        else out.set(name, 'pending')
      }
    }
    return out
  }

  /** Evaluates the rollout soon, once: reports arriving meanwhile share one evaluation. */
  #kick(id: string): void {
    if (this.#stopped || !this.#leading || this.#queued.has(id)) return
    this.#queued.add(id)
    void this.#serial(id, () => {
      this.#queued.delete(id)
      return this.#evaluate(id)
    }).catch((err: Error) => this.#init.log(`rollout ${id}: ${err.message}`))
  }

  #serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.#chains.get(id) ?? Promise.resolve()).catch(() => {}).then(fn)
    this.#chains.set(id, run)
    return run
  }

  async #evaluate(id: string): Promise<void> {
    const r = await this.#init.store.rollouts.get(id)
    if (r === undefined || this.#stopped) return
    if (r.state !== 'running') {
      if (r.state !== 'paused') this.#forget(id)
      return
    }
    const now = this.#now()
    const outcomes = await this.#outcomes(r)
    const wave = r.plan[r.wave] ?? []
    const failedAll = [...outcomes.values()].filter((o) => o === 'failed').length
    const failedWave = wave.filter((m) => outcomes.get(m) === 'failed').length
    const total = r.plan.flat().length
    const waveLimit = failureLimit(r.policy, wave.length)
    const allLimit = failureLimit(r.policy, total)
    if (failedWave > waveLimit || failedAll > allLimit) {
      const reason =
        failedWave > waveLimit
          ? `${failedWave} of ${wave.length} machine(s) of wave ${r.wave + 1} failed (at most ${waveLimit} allowed)`
          : `${failedAll} of ${total} machine(s) failed (at most ${allLimit} allowed)`
      await this.#stopRollout(r, 'halted', reason, r.policy.onFailure === 'rollback')
      return
    }
    if (wave.some((m) => outcomes.get(m) === 'pending')) {
      // Wakes at the offline timeout, when offline machines count as skipped. Past it, a
      // machine still pending is online and busy: its reports (or its going offline) wake us.
      const deadline = r.waveStartedAt + r.policy.offlineTimeoutMs
      if (now < deadline) this.#wakeAt(id, deadline)
      return
    }
    if (r.soakStartedAt === null) {
      const next = await this.#transition(r, { soakStartedAt: now }, [])
      if (next !== undefined) this.#kick(id)
      return
    }
    const soakEnd = r.soakStartedAt + r.policy.soakMs
    if (now < soakEnd) {
      this.#wakeAt(id, soakEnd)
      return
    }
    const k = r.wave + 1
    if (k >= r.plan.length) {
      await this.#transition(r, { state: 'done', reason: null }, [])
      this.#forget(id)
      return
    }
    const machines = r.plan[k] ?? []
    const desired = machines.map((machine) => ({ machine, manifestId: r.manifestId }))
    const next = await this.#transition(r, { wave: k, waveStartedAt: now, soakStartedAt: null }, desired)
    if (next === undefined) return
    await this.#init.push(machines)
    this.#kick(id)
  }

  /**
   * Halts or aborts. Machines of started waves that never reported on the
   * release get their previous desired manifest back (it is withheld). With
   * `rollback`, every machine of started waves that a held rollback manifest
   * covers gets it instead: also one that has not reported yet, since it may be
   * applying the release right now (for one still on the previous generation
   * the rollback only applies it again).
   */
  async #stopRollout(
    r: RolloutRecord,
    state: 'halted' | 'aborted',
    reason: string,
    rollback: boolean,
  ): Promise<RolloutRecord> {
    const started = r.plan.slice(0, r.wave + 1).flat()
    const back = new Map<string, string>()
    if (rollback) for (const held of r.rollbacks) for (const m of held.machines) back.set(m, held.manifestId)
    const desired: DesiredChange[] = []
    const rolledBack: string[] = []
    for (const name of started) {
      const to = back.get(name)
      if (to !== undefined) {
        desired.push({ machine: name, manifestId: to })
        rolledBack.push(name)
      } else if ((await this.#init.store.latestRolloutReport(name, r.id)) === undefined)
        desired.push({ machine: name, manifestId: r.previous[name] ?? null })
    }
    const next = await this.#transition(r, { state, reason, rolledBack: rollback }, desired)
    if (next === undefined)
      throw new RolloutControlError('rollout-state', `rollout ${r.id} changed meanwhile`)
    this.#forget(r.id)
    const detail =
      `rollout ${r.id} ${state} in wave ${r.wave + 1} of ${r.plan.length}: ${reason}; ` +
      `withheld from ${desired.length - rolledBack.length} machine(s)` +
      (rollback ? `, previous generation sent to ${rolledBack.join(', ') || 'no machine'}` : '')
    this.#init.log(detail)
    if (state === 'halted') await this.#init.audit('rollout-halt', detail)
    await this.#init.push(desired.map((d) => d.machine))
    return next
  }

  async #transition(
    r: RolloutRecord,
    change: RolloutChange,
    desired: readonly DesiredChange[],
  ): Promise<RolloutRecord | undefined> {
    const next = await this.#init.store.rollouts.transition(r.id, r, change, desired, this.#now())
    if (next !== undefined) this.#changed(next)
    return next
  }

  #changed(r: RolloutRecord): void {
    for (const l of this.#listeners) {
      try {
        l(r)
      } catch {
        // a closed watch stream must not stop the rollout
      }
    }
  }

  #wakeAt(id: string, at: number): void {
    if (this.#stopped || !this.#leading) return
    clearTimeout(this.#timers.get(id))
    const timer = setTimeout(() => this.#kick(id), Math.max(0, at - this.#now()) + 5)
    timer.unref()
    this.#timers.set(id, timer)
  }

  #forget(id: string): void {
    this.#active.delete(id)
    clearTimeout(this.#timers.get(id))
    this.#timers.delete(id)
  }
}

export class RolloutControlError extends CodedError<'unknown-rollout' | 'rollout-state'> {
  override name = 'RolloutControlError'
}
