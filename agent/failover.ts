/**
 * Which coordinator the control link (link.ts) dials: the enrollment one after
 * a start, and once the link to one is lost, the next of the fleet's verified
 * coordinator list (coordinators.ts), round the end. The link's own backoff
 * paces the tries (a lost session that worked waits a random fraction of the
 * first delay, so a fleet whose coordinator died does not dial the next one
 * all at once); this only says where each try goes.
 *
 * It also takes the lists coordinators send, saying what it did with each,
 * hands the blob and Nix cache clients the coordinator the link is on now, and
 * keeps the standby link (standby.ts) pointed at the one after it.
 */
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { errorMessage } from '../lib/index.ts'
import type { CoordinatorEntry } from '../protocol/index.ts'
import { type FleetTrust, KnownCoordinators } from './coordinators.ts'
import type { CoordinatorFinder } from './discovery.ts'
import type { CoordinatorChoice, LinkState, LinkTarget } from './link-init.ts'
import { type StandbyInit, StandbyLink } from './standby.ts'

/**
 * What runtime.json (and so `doctor --state`) shows of the control link: where it
 * runs, to which coordinator (`peerId`), and how many the agent knows of.
 */
export type CoordinatorState = LinkState & { peerId?: string; coordinators?: number; listVersion?: number }

export interface FailoverInit {
  stateDir: string
  fleet: FleetTrust
  /** The enrollment coordinator: dialed first after a start. */
  enrolled: CoordinatorEntry
  /** Where to dial the enrollment coordinator instead of its enrollment addresses (--coordinator-addr). */
  coordinatorAddrs?: readonly string[] | undefined
  /** A DHT lookup for a coordinator whose known addresses fail (daemon.ts), if the agent has a way in. */
  finderFor: (peerId: string, addrs: readonly string[]) => CoordinatorFinder | undefined
  /** Lets the dial scope reach a listed coordinator's private addresses. */
  allow: (addrs: readonly string[]) => void
  emit: (event: string, fields: Record<string, unknown>) => void
  /**
   * Holds a standby connection to the coordinator it would fail over to
   * (standby.ts) on this host; without it, none is held.
   */
  standby?: Omit<StandbyInit, 'target' | 'emit'>
}

export class Failover implements CoordinatorChoice {
  readonly #known: KnownCoordinators
  readonly #init: FailoverInit
  #current: LinkTarget
  readonly #standby: StandbyLink | undefined
  /** Where the standby link goes: the one after the current, while there is another. */
  #standbyTarget: LinkTarget | undefined

  private constructor(known: KnownCoordinators, init: FailoverInit) {
    this.#known = known
    this.#init = init
    for (const c of known.entries()) init.allow(c.addrs)
    this.#current = this.#target(known.enrolled)
    this.#standby =
      init.standby && new StandbyLink({ ...init.standby, target: () => this.#standbyTarget, emit: init.emit })
    this.#retarget()
    this.#standby?.start()
  }

  /** Stops the standby link. */
  async stop(): Promise<void> {
    await this.#standby?.stop()
  }

  static async open(init: FailoverInit): Promise<Failover> {
    const log = (msg: string) => init.emit('warning', { context: 'coordinator-list', message: msg })
    const override = init.coordinatorAddrs ?? []
    const enrolled = override.length > 0 ? { ...init.enrolled, addrs: [...override] } : init.enrolled
    const known = await KnownCoordinators.open(init.stateDir, init.fleet, enrolled, log)
    return new Failover(known, init)
  }

  current(): LinkTarget {
    return this.#current
  }

  /** The current one is lost: the next of the list is dialed from now on. */
  next(): void {
    const lost = this.#current.peer.toString()
    let entry = this.#known.after(lost)
    for (let tries = this.size; tries > 0 && entry.peerId !== lost; tries--) {
      try {
        this.#current = this.#target(entry)
        this.#retarget()
        return
      } catch (err) {
        // signed by the root, but not a peer id or multiaddr this version reads: on to the one after it
        const message = `cannot dial listed coordinator ${entry.peerId}: ${errorMessage(err)}`
        this.#init.emit('warning', { context: 'coordinator-list', message })
      }
      entry = this.#known.after(entry.peerId)
    }
  }

  /** The coordinator dialed now, for the blob and Nix cache clients. */
  readonly peer = (): PeerId => this.#current.peer

  /** How many coordinators the agent knows (1 until a list arrives). */
  get size(): number {
    return this.#known.entries().length
  }

  /** The list's version, if the agent holds one. */
  get version(): number | undefined {
    return this.#known.list?.version
  }

  /** The link's state, naming the coordinator it is on and how many the agent knows. */
  describe(state: LinkState): CoordinatorState {
    const version = this.version
    return {
      ...state,
      ...(state.connected ? { peerId: this.#current.peer.toString() } : {}),
      coordinators: this.size,
      ...(version !== undefined ? { listVersion: version } : {}),
    }
  }

  /** A list from the coordinator: kept if it is the fleet root's and newer; refused, with a warning, if not. */
  readonly receive = async (envelope: Uint8Array): Promise<void> => {
    const { emit } = this.#init
    try {
      const outcome = await this.#known.take(envelope)
      if (outcome === 'older')
        emit('warning', {
          context: 'coordinator-list',
          message: `a coordinator sent a coordinator list older than version ${this.version}; kept the newer one`,
        })
      if (outcome !== 'taken') return
      for (const c of this.#known.entries()) this.#init.allow(c.addrs)
      this.#retarget()
      emit('coordinators', {
        version: this.version,
        coordinators: this.#known.entries().map((c) => c.peerId),
      })
    } catch (err) {
      // one the fleet root did not sign for this fleet, or a disk that would not keep it
      emit('warning', {
        context: 'coordinator-list',
        message: `refused the coordinator list a coordinator sent (${errorMessage(err)}); kept the one held`,
      })
    }
  }

  #retarget(): void {
    const current = this.#current.peer.toString()
    const entry = this.#known.after(current)
    try {
      this.#standbyTarget = entry.peerId === current ? undefined : this.#target(entry)
    } catch {
      this.#standbyTarget = undefined // one this version cannot dial: next() warns when it comes to it
    }
    this.#standby?.reconsider()
  }

  #target(entry: CoordinatorEntry): LinkTarget {
    this.#init.allow(entry.addrs)
    const discover = this.#init.finderFor(entry.peerId, entry.addrs)
    return {
      peer: peerIdFromString(entry.peerId),
      addrs: entry.addrs.map((a) => multiaddr(a)),
      ...(discover ? { discover } : {}),
    }
  }
}
