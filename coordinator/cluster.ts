/**
 * One coordinator's part in a fleet served by several on one store: it acts on
 * the notes of the others (cluster-channel.ts) and tells them about its own
 * agents' sessions.
 *
 * - A desired state set elsewhere (a manifest submitted on another
 *   coordinator, a wave the rollout leader started) is pushed to the machine if
 *   its session is here; a tag record or a revocation likewise.
 * - Status reports, manifests and enrollments stored elsewhere, and sessions
 *   opened or closed elsewhere, become this coordinator's FleetEvents, so its
 *   `watch` streams and its rollout engine see the whole fleet.
 * - A manifest stored elsewhere whose archive is not in this coordinator's
 *   blob directory is said at once (blob-share.ts): coordinators must share it.
 * - The rollout lease decides which coordinator's engine moves rollouts on.
 * - After the listener reconnected (notes may have been lost), every local
 *   session gets its desired manifest again and the engine re-reads rollouts.
 * - Each coordinator says it is alive every ALIVE_MS; the agents of one silent
 *   for three intervals (killed, cut off from the database) count as offline
 *   here, so rollouts skip them and `machines` shows them so.
 *
 * Notes about many machines arrive one per machine; pushes are gathered per
 * turn of the event loop, so a manifest for a thousand machines is one read.
 */
import { missingArchive, unsharedBlobsMessage } from './blob-share.ts'
import type { BlobStore } from './blobs.ts'
import type { ClusterChannel, ClusterNote, OwnNote } from './cluster-channel.ts'
import type { CoordinatorRoster } from './cluster-roster.ts'
import type { ControlService } from './control.ts'
import type { FleetEvents } from './events.ts'
import type { RolloutEngine } from './rollout-engine.ts'
import type { FleetStore } from './store.ts'

/** How many of a machine's newest reports are searched for the one a note names. */
const STATUS_LOOKBACK = 32
/** How often a coordinator says it is alive; one not heard for three intervals is taken for dead. */
const ALIVE_MS = 10_000

export interface ClusterInit {
  channel: ClusterChannel
  store: FleetStore
  control: Pick<
    ControlService,
    'online' | 'pushDesired' | 'pushTags' | 'pushRevocations' | 'pushCoordinatorList' | 'sessionInfo'
  >
  events: FleetEvents
  rollouts: Pick<RolloutEngine, 'lead' | 'standBy' | 'noteChanged' | 'recheck'>
  roster: Pick<CoordinatorRoster, 'refresh'>
  /** Where this coordinator keeps blobs: manifests stored elsewhere must find their archives here too */
  blobs: Pick<BlobStore, 'size' | 'dir'>
  log: (msg: string) => void
  /** Default ALIVE_MS; tests shorten it. */
  aliveMs?: number
}

export class ClusterMember {
  readonly #init: ClusterInit
  /** Machines connected to another coordinator, and to which (its origin). */
  readonly #remote = new Map<string, string>()
  /** When each other coordinator was last heard of. */
  readonly #heard = new Map<string, number>()
  readonly #toPush = new Set<string>()
  /**
   * The last note's event, emitted: events go out in the order their notes came.
   * Their reads run at once, on several pooled connections, and finish in any
   * order; a watch then saw a machine's "committed" before its "confirming".
   */
  #emitted: Promise<void> = Promise.resolve()
  #unsubscribe: (() => void) | undefined
  #alive: NodeJS.Timeout | undefined

  constructor(init: ClusterInit) {
    this.#init = init
  }

  /** Whether the machine has a session with another coordinator of the fleet. */
  onlineElsewhere(machine: string): boolean {
    return this.#remote.has(machine)
  }

  start(): void {
    const { channel, events, rollouts, log } = this.#init
    this.#unsubscribe = events.on((e) => {
      if ((e.type === 'online' || e.type === 'offline') && e.remote !== true)
        this.#publish(e.type === 'online' ? { k: 'online', machine: e.machine, path: e.path } : e)
    })
    channel.listen({ note: (n) => this.#note(n), resync: () => this.#resync(), log })
    channel.lease({
      gained: () => void rollouts.lead().catch((err: Error) => log(`rollouts: ${err.message}`)),
      lost: () => rollouts.standBy(),
      log,
    })
    // A coordinator killed says nothing more: its agents count as gone once it has been silent a while.
    const aliveMs = this.#init.aliveMs ?? ALIVE_MS
    this.#alive = setInterval(() => {
      this.#publish({ k: 'alive' })
      this.#forgetSilent(Date.now() - 3 * aliveMs)
    }, aliveMs)
    this.#alive.unref()
  }

  stop(): void {
    this.#unsubscribe?.()
    clearInterval(this.#alive)
  }

  #forgetSilent(before: number): void {
    for (const [origin, at] of this.#heard) {
      if (at >= before) continue
      this.#heard.delete(origin)
      this.#init.log(`cluster: coordinator ${origin} went silent; its agents count as offline`)
      for (const [machine, where] of this.#remote) if (where === origin) this.#gone(machine, origin)
    }
  }

  #publish(note: OwnNote | { machine: string }): void {
    const own = 'k' in note ? note : { k: 'offline' as const, machine: note.machine }
    this.#init.channel.publish(own).catch((err: Error) => this.#init.log(`cluster: ${err.message}`))
  }

  #note(note: ClusterNote): void {
    const { control, events, store, rollouts, log } = this.#init
    if (note.o !== null) this.#heard.set(note.o, Date.now())
    const failed = (err: Error) => log(`cluster: ${note.k} note: ${err.message}`)
    switch (note.k) {
      case 'desired':
        this.#push(note.machine)
        break
      case 'tags':
        control.pushTags(note.machine).catch(failed)
        break
      case 'revoked':
        control.pushRevocations()
        events.emit({ type: 'revoked', serial: note.serial })
        break
      case 'coordinators':
        this.#init.roster.refresh().then((newer) => newer && control.pushCoordinatorList(), failed)
        break
      case 'rollout':
        rollouts.noteChanged(note.id).catch(failed)
        break
      case 'status':
        this.#inOrder(store.statusHistory(note.machine, STATUS_LOOKBACK), failed, (history) => {
          const status = history.find((s) => s.seq === note.seq)
          if (status !== undefined)
            events.emit({ type: 'status', machine: note.machine, status, remote: true })
        })
        break
      case 'manifest':
        this.#inOrder(store.getManifest(note.id), failed, async (manifest) => {
          if (manifest === undefined) return
          events.emit({ type: 'manifest', manifest })
          const sha256 = await missingArchive(manifest, this.#init.blobs)
          if (sha256 !== undefined)
            log(unsharedBlobsMessage(this.#init.blobs.dir, { manifest: manifest.id, sha256 }))
        })
        break
      case 'enrolled':
        this.#inOrder(store.getMachine(note.name), failed, (machine) => {
          if (machine !== undefined) events.emit({ type: 'enrolled', machine })
        })
        break
      case 'online':
        if (note.o === null) break
        this.#remote.set(note.machine, note.o)
        events.emit({ type: 'online', machine: note.machine, path: note.path, remote: true })
        break
      case 'offline':
        if (note.o !== null) this.#gone(note.machine, note.o)
        break
      case 'alive':
        break
      case 'hello':
        for (const machine of control.online.keys()) {
          const path = control.sessionInfo(machine)?.path
          if (path !== undefined) this.#publish({ k: 'online', machine, path })
        }
        break
    }
  }

  /** Emits what `read` found once the events of the notes before it are out. */
  #inOrder<T>(
    read: Promise<T>,
    failed: (err: Error) => void,
    emit: (found: T) => void | Promise<void>,
  ): void {
    read.catch(() => {}) // its failure is reported in turn, below
    this.#emitted = this.#emitted.then(() => read.then(emit)).catch(failed)
  }

  /** The machine's session with coordinator `origin` ended (or that coordinator went silent). */
  #gone(machine: string, origin: string): void {
    // a session that moved here, or to a third coordinator, meanwhile is not gone
    if (this.#remote.get(machine) !== origin) return
    this.#remote.delete(machine)
    if (!this.#init.control.online.has(machine))
      this.#init.events.emit({ type: 'offline', machine, remote: true })
  }

  #push(machine: string): void {
    if (this.#toPush.size === 0)
      setImmediate(() => {
        const machines = [...this.#toPush]
        this.#toPush.clear()
        this.#init.control
          .pushDesired(machines)
          .catch((err: Error) => this.#init.log(`cluster: ${err.message}`))
      })
    this.#toPush.add(machine)
  }

  /** The listener (re)connected: redo what notes missed meanwhile would have done. */
  #resync(): void {
    const { control, channel, rollouts, log } = this.#init
    const failed = (err: Error) => log(`cluster: resync: ${err.message}`)
    rollouts.recheck().catch(failed)
    for (const machine of control.online.keys()) this.#push(machine)
    control.pushRevocations()
    for (const machine of control.online.keys()) control.pushTags(machine).catch(failed)
    channel.publish({ k: 'hello' }).catch(failed)
  }
}
