/**
 * `watch` on the admin protocol: the coordinator streams fleet events to the
 * admin until the admin closes the stream. For the whole fleet (no rollout) it
 * sends a snapshot of every machine the admin's certificate covers, then status,
 * online, offline, enrolled and manifest (new rollout) events.
 *
 * For one rollout it first sends a `manifest` event per manifest of that
 * rollout, naming the machines it targeted (also those whose desired state has
 * since moved on to a newer rollout), then the snapshot, then the same events
 * with status reports of other rollouts left out. Every machine view in a
 * rollout watch is the machine as regards that rollout: when its newest report
 * is about something else, the state comes from its newest report about the
 * rollout. An agent's first report after a restart repeats its own last update,
 * which is not the rollout when it refused it, and a newer rollout's reports
 * are not this one's outcome: a finished rollout stays finished either way.
 *
 * A watch of a rollout in waves also streams where the rollout stands (a
 * `rollout` event): once before the snapshot, then whenever that changes, as
 * the rollout engine moves it on (wave started, soak, halted, paused, resumed,
 * aborted, done) or a report or an agent coming or going changes a machine's
 * outcome. A burst of reports is sent as one view, once the events queued
 * before it are out; an engine transition at once. Only an admin who may see
 * the rollout (its certificate covers every machine of it, as for rollout-show)
 * gets these events.
 *
 * A watch of one machine (`machine`, which the admin's certificate must cover:
 * checked before the stream opens) sends the same, cut to that machine, and
 * the output of its running updates as its agent sends it (`update-log`, see
 * update-log-gate.ts): `fleetmesh logs <machine> --follow`. Only such a watch
 * gets update-log events, so watchers of the whole fleet are not flooded and
 * CLIs older than them never see one.
 *
 * Everything sent is cut to the admin's scope: machines it covers, and a
 * manifest only with the covered machines it went to (none covered: not sent,
 * unless the admin's scope covers the manifest's targets, so it could have
 * deployed it itself). A watch outlives the request that opened it, so the
 * admin's chain is checked again while it runs: at once when a revocation is
 * stored, when a link of the chain expires, and every AUTHORITY_RECHECK_MS
 * before more events are sent. A chain no longer valid ends the stream with
 * the refusal ('revoked', 'expired'), which the CLI prints and exits on.
 */
import { type Authority, authorityCovers, authorityExpiresAt, recheckAuthority } from '../keys/index.ts'
import { WakeableSleep } from '../lib/index.ts'
import {
  adminResponseSchema,
  deployScope,
  encodeMessage,
  type FramedStream,
  type MachineView,
  type UpdateLogEvent,
  type WatchEvent,
} from '../protocol/index.ts'
import { AdminDenied } from './admin-context.ts'
import { visibleRollout } from './admin-rollouts.ts'
import type { ControlService } from './control.ts'
import type { FleetEvent, FleetEvents } from './events.ts'
import { coversMachine } from './machine-scope.ts'
import type { RolloutEngine } from './rollout-engine.ts'
import type { FleetStore, MachineRecord, ManifestRecord, StatusRecord } from './store.ts'
import { machineView } from './views.ts'

/** Events a slow watcher may fall behind by before its stream is ended (it reconnects for a fresh snapshot). */
const WATCH_BUFFER_LIMIT = 10_000
/**
 * How long a watch goes on sending on one check of its admin's chain. A stored
 * revocation is seen at once (its event); this bounds how late one is seen that
 * reached the store another way.
 */
export const AUTHORITY_RECHECK_MS = 5_000

export interface WatchSource {
  store: FleetStore
  events: FleetEvents
  control: Pick<ControlService, 'isOnline'>
  rollouts: Pick<RolloutEngine, 'onChange' | 'view'>
}

/**
 * What a watch queues: fleet events, and a rollout in waves having changed in the
 * engine (the watched one; for a whole-fleet watch, any the admin may see).
 */
type WatchItem = FleetEvent | { type: 'rollout-changed'; id: string }

/**
 * Streams a watch on `fs` until the admin closes it; `rolloutId` null follows the
 * whole fleet, `machine` (one the caller covers) only that machine.
 */
export async function streamWatch(
  source: WatchSource,
  fs: FramedStream,
  authority: Authority,
  rolloutId: string | null,
  machine: string | null = null,
): Promise<void> {
  const views = new WatchViews(source, authority, rolloutId, machine)
  const queue: WatchItem[] = []
  const pause = new WakeableSleep()
  let overflow = false
  /** When the chain was last found valid; 0: check before anything more is sent. */
  let checkedAt = 0
  let revocations = 0
  const enqueue = (e: WatchItem) => {
    if (queue.length >= WATCH_BUFFER_LIMIT) overflow = true
    else queue.push(e)
    pause.wake()
  }
  // Subscribed before the snapshot is read, so nothing that happens meanwhile is missed.
  const off = source.events.on((e) => {
    if (e.type === 'revoked') {
      revocations++
      checkedAt = 0
      pause.wake()
    } else if (wanted(e, rolloutId, machine)) enqueue(e)
  })
  const offRollout = source.rollouts.onChange((r) => {
    if (r.id === rolloutId || (rolloutId === null && machine === null))
      enqueue({ type: 'rollout-changed', id: r.id })
  })
  const expiresAt = authorityExpiresAt(authority)
  const stillValid = async (): Promise<void> => {
    const now = Date.now()
    if (now - checkedAt < AUTHORITY_RECHECK_MS && now < expiresAt) return
    const seen = revocations
    recheckAuthority(authority, { now, revokedSerials: await source.store.revokedSerials() })
    // A revocation stored while the set was being read may be missing from it: check again.
    if (revocations === seen) checkedAt = now
  }
  const closed = new Promise<void>((resolve) =>
    fs.stream.addEventListener('close', () => resolve(), { once: true }),
  )
  const send = (result: WatchEvent | UpdateLogEvent) =>
    fs.send(encodeMessage(adminResponseSchema, { ok: true, result }))
  try {
    await stillValid()
    for (const manifest of await views.rolloutManifests()) await send(manifest)
    const wave = await views.rollout()
    if (wave !== undefined) await send(wave)
    await send({ type: 'snapshot', machines: await views.snapshot() })
    /** Whether the rollout's view may have changed since it was last sent. */
    let rolloutDirty = false
    while (fs.stream.status === 'open') {
      if (overflow)
        throw new AdminDenied(
          'watch-overflow',
          'watcher fell too far behind; reconnect to get a fresh snapshot',
        )
      await stillValid()
      const e = queue.shift()
      if (e === undefined) {
        // Woken by an event, or when the chain is due to be checked again (or expires).
        const due = Math.min(checkedAt + AUTHORITY_RECHECK_MS, expiresAt) - Date.now()
        await Promise.race([pause.sleep(Math.max(0, due)), closed])
        continue
      }
      if (e.type !== 'rollout-changed') {
        const view = await views.event(e)
        if (view !== undefined) await send(view)
      } else if (rolloutId === null) {
        // a whole-fleet watch (the dashboard): where each visible rollout stands as the engine moves it
        const changed = await views.otherRollout(e.id)
        if (changed !== undefined) await send(changed)
        continue
      }
      if (rolloutId !== null && e.type !== 'manifest' && e.type !== 'enrolled') rolloutDirty = true
      // Reports come in bursts: their view goes out once the queue is drained; the engine's changes at once.
      if (!rolloutDirty || (e.type !== 'rollout-changed' && queue.length > 0)) continue
      rolloutDirty = false
      const changed = await views.rollout()
      if (changed !== undefined) await send(changed)
    }
  } finally {
    off()
    offRollout()
    pause.wake()
  }
}

/**
 * Whether a watch of `rolloutId` (null: any) and `machine` (null: every one) passes
 * `e` on: status reports of other rollouts are left out of a rollout's watch, and
 * a watch of one machine gets only events about it, its updates' output included.
 */
function wanted(e: FleetEvent, rolloutId: string | null, machine: string | null): boolean {
  if (rolloutId !== null && e.type === 'status' && e.status.report.rolloutId !== rolloutId) return false
  if (machine === null) return e.type !== 'update-log'
  if (e.type === 'enrolled') return e.machine.name === machine
  return 'machine' in e && e.machine === machine
}

/** The machine views one watch sends: plain, or as regards its rollout. */
class WatchViews {
  readonly #source: WatchSource
  readonly #authority: Authority
  readonly #rolloutId: string | null
  /** The one machine watched, or null for all the admin covers. */
  readonly #machine: string | null
  /** The machines the watched rollout targeted, as its manifests name them. */
  readonly #targeted = new Set<string>()
  /** The rollout view last sent, to send only changes. */
  #lastRollout = ''

  constructor(source: WatchSource, authority: Authority, rolloutId: string | null, machine: string | null) {
    this.#source = source
    this.#authority = authority
    this.#rolloutId = rolloutId
    this.#machine = machine
  }

  /** The watched rollout's manifests as `manifest` events (none for a whole-fleet watch). */
  async rolloutManifests(): Promise<WatchEvent[]> {
    if (this.#rolloutId === null) return []
    const out: WatchEvent[] = []
    for (const m of await this.#source.store.rolloutManifests(this.#rolloutId)) {
      for (const name of m.machines) this.#targeted.add(name)
      const event = await this.#manifest(m)
      if (event !== undefined) out.push(event)
    }
    return out
  }

  /**
   * Where the watched rollout in waves stands, when the admin may see it and it
   * changed since last sent; undefined for a whole-fleet watch or a plain rollout.
   */
  async rollout(): Promise<WatchEvent | undefined> {
    if (this.#rolloutId === null) return undefined
    const r = await visibleRollout(this.#source.store, this.#authority, this.#rolloutId)
    if (r === undefined) return undefined
    const rollout = await this.#source.rollouts.view(r)
    const text = JSON.stringify(rollout)
    if (text === this.#lastRollout) return undefined
    this.#lastRollout = text
    return { type: 'rollout', rollout }
  }

  /** A rollout in waves the engine moved, for a whole-fleet watch, if the admin may see it. */
  async otherRollout(id: string): Promise<WatchEvent | undefined> {
    const r = await visibleRollout(this.#source.store, this.#authority, id)
    return r === undefined ? undefined : { type: 'rollout', rollout: await this.#source.rollouts.view(r) }
  }

  async snapshot(): Promise<MachineView[]> {
    const latest = await this.#source.store.latestStatuses()
    const out: MachineView[] = []
    for (const m of await this.#source.store.listMachines())
      if (this.#covers(m) && (this.#machine === null || m.name === this.#machine))
        out.push(await this.#view(m, latest.get(m.name)))
    return out
  }

  async event(e: FleetEvent): Promise<WatchEvent | UpdateLogEvent | undefined> {
    if (e.type === 'manifest') {
      if (e.manifest.rolloutId === this.#rolloutId) for (const n of e.manifest.machines) this.#targeted.add(n)
      return this.#manifest(e.manifest)
    }
    if (e.type === 'revoked') return undefined
    const name = e.type === 'enrolled' ? e.machine.name : e.machine
    const m = await this.#source.store.getMachine(name)
    if (m === undefined || !this.#covers(m)) return undefined
    if (e.type === 'update-log') return e
    // A status event shows its own report: the latest in the store may already be a later one (two
    // reports in one group commit), and a follower would never see the state in between.
    const status = e.type === 'status' ? e.status : await this.#source.store.latestStatus(name)
    return { type: e.type, machine: await this.#view(m, status) }
  }

  async #view(m: MachineRecord, latest: StatusRecord | undefined): Promise<MachineView> {
    const { store, control } = this.#source
    let status = latest
    const rollout = this.#rolloutId
    if (rollout !== null && this.#targeted.has(m.name) && latest?.report.rolloutId !== rollout)
      status = (await store.latestRolloutReport(m.name, rollout)) ?? latest
    return machineView(m, status, await store.getDesired(m.name), control.isOnline(m.name))
  }

  /**
   * A manifest as this admin may see it: the machines it went to that the admin
   * covers. Undefined when it covers none of them, unless the admin's scope
   * covers the manifest's targets (it may deploy there itself, e.g. a tag no
   * machine carries yet): which rollouts exist elsewhere in the fleet is not its business.
   */
  async #manifest(m: ManifestRecord): Promise<WatchEvent | undefined> {
    const machines = await this.#covered(m.machines)
    if (machines.length === 0 && !authorityCovers(this.#authority, deployScope(m.targets))) return undefined
    return { type: 'manifest', manifestId: m.id, rolloutId: m.rolloutId, machines }
  }

  #covers(m: MachineRecord): boolean {
    return coversMachine(this.#authority, m)
  }

  /** Of `names`, the machines the admin's certificate covers. */
  async #covered(names: readonly string[]): Promise<string[]> {
    const covered = new Set(
      (await this.#source.store.listMachines()).filter((m) => this.#covers(m)).map((m) => m.name),
    )
    return names.filter((n) => covered.has(n))
  }
}
