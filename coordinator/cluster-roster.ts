/**
 * The coordinators this coordinator counts as the fleet's: itself, and those
 * the fleet root's newest signed list names (protocol/coordinator-list.ts). The
 * list comes from the state directory (`coordinators add` and `init` put it
 * there) and, when several coordinators share a store, from the store, where
 * each offers its own and the highest version wins; a newer one stored by
 * another coordinator arrives as a cluster note (cluster.ts calls refresh).
 * Used to accept an enrollment token made for any coordinator of the fleet.
 */
import type { PublicKey } from '../keys/index.ts'
import { type CoordinatorList, openCoordinatorList, readCoordinatorList } from '../protocol/index.ts'
import type { ClusterChannel } from './cluster-channel.ts'

export class CoordinatorRoster {
  readonly #self: string
  readonly #fleet: { fleetRoot: PublicKey; fleetId: string }
  readonly #channel: ClusterChannel | undefined
  #list: CoordinatorList | undefined
  #envelope: Uint8Array | undefined

  constructor(self: string, fleet: { fleetRoot: PublicKey; fleetId: string }, channel?: ClusterChannel) {
    this.#self = self
    this.#fleet = fleet
    this.#channel = channel
  }

  /** The newest list of the state directory and the store; the state directory's is offered to the store. */
  async load(stateDir: string): Promise<void> {
    const file = await readCoordinatorList(stateDir, this.#fleet)
    if (file !== undefined) {
      this.#take(file.list, file.envelope)
      await this.#channel?.offerCoordinatorList(file.list.version, file.envelope)
    }
    await this.refresh()
  }

  /** Reads the store's list again (another coordinator stored a newer one); true if it was newer. */
  async refresh(): Promise<boolean> {
    const envelope = await this.#channel?.coordinatorList()
    // verified like any list: the store is shared, the fleet root is the authority
    return envelope !== undefined && this.#take(openCoordinatorList(envelope, this.#fleet), envelope)
  }

  #take(list: CoordinatorList, envelope: Uint8Array): boolean {
    if (this.#list !== undefined && list.version <= this.#list.version) return false
    this.#list = list
    this.#envelope = envelope
    return true
  }

  /** The newest list's envelope as the fleet root signed it, for agents. */
  get envelope(): Uint8Array | undefined {
    return this.#envelope
  }

  /** Whether `peerId` is this coordinator or one the fleet root listed. */
  accepts(peerId: string): boolean {
    return peerId === this.#self || (this.#list?.coordinators.some((c) => c.peerId === peerId) ?? false)
  }

  get list(): CoordinatorList | undefined {
    return this.#list
  }
}
