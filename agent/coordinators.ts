/**
 * The coordinators this agent may run its control link to: the one it enrolled
 * with, and those of the newest coordinator list the fleet root signed
 * (protocol/coordinator-list.ts) that it has verified. A coordinator sends the
 * list on every connect and whenever a newer one is stored; the agent verifies
 * it against the fleet root it pinned at enrollment, keeps it only when its
 * version is above the one it holds, and keeps it in `<state>/coordinators.list`
 * (the envelope as signed, the file admin homes and coordinators keep too), so
 * that after a restart it still knows where to go if its own coordinator is gone.
 *
 * The list only says whom to talk to: every manifest is still checked against
 * the fleet root and the admins it certified, whichever coordinator carries it.
 * A peer counts as a coordinator only if its peer id is here: the link dials by
 * peer id and the Noise handshake proves it.
 *
 * @example
 *
 * ```ts
 * const known = await KnownCoordinators.open(stateDir, fleet, enrollment.coordinator, log)
 * await known.take(envelope) // 'taken' | 'current' | 'older'; throws CoordinatorListError
 * known.after('12D3Koo…A')   // the entry to dial once A is lost
 * ```
 */
import { join } from 'node:path'
import type { PublicKey } from '../keys/index.ts'
import { errorMessage } from '../lib/index.ts'
import {
  COORDINATOR_LIST_FILE,
  type CoordinatorEntry,
  type CoordinatorList,
  openCoordinatorList,
  readCoordinatorList,
  writeCoordinatorList,
} from '../protocol/index.ts'

export interface FleetTrust {
  fleetRoot: PublicKey
  fleetId: string
}

/** What `take` did with a list: kept it, had it already, or refused it as older than the one kept. */
export type TakeOutcome = 'taken' | 'current' | 'older'

export class KnownCoordinators {
  readonly #dir: string
  readonly #fleet: FleetTrust
  readonly #enrolled: CoordinatorEntry
  #list: CoordinatorList | undefined

  private constructor(dir: string, fleet: FleetTrust, enrolled: CoordinatorEntry) {
    this.#dir = dir
    this.#fleet = fleet
    this.#enrolled = enrolled
  }

  /**
   * The list kept in `dir`, if any. A damaged one (unreadable, too big, not
   * signed by this fleet's root) is reported through `log` and set aside: the
   * agent goes on with its enrollment coordinator, and the next coordinator it
   * reaches sends the list again.
   */
  static async open(
    dir: string,
    fleet: FleetTrust,
    enrolled: CoordinatorEntry,
    log: (msg: string) => void,
  ): Promise<KnownCoordinators> {
    const known = new KnownCoordinators(dir, fleet, enrolled)
    const file = join(dir, COORDINATOR_LIST_FILE)
    try {
      known.#list = (await readCoordinatorList(dir, fleet))?.list
    } catch (err) {
      log(
        `cannot use the coordinator list in ${file} (${errorMessage(err)}); ` +
          'going on with the enrollment coordinator until a coordinator sends the list again',
      )
    }
    return known
  }

  /** The newest verified list, if any. */
  get list(): CoordinatorList | undefined {
    return this.#list
  }

  /**
   * A list a coordinator sent: verified against the fleet root (a CoordinatorListError
   * if it is not the fleet's), and kept, on disk first, when its version is above
   * the one held.
   */
  async take(envelope: Uint8Array): Promise<TakeOutcome> {
    const list = openCoordinatorList(envelope, this.#fleet)
    const held = this.#list?.version ?? 0
    if (list.version === held) return 'current'
    if (list.version < held) return 'older'
    await writeCoordinatorList(this.#dir, envelope)
    this.#list = list
    return 'taken'
  }

  /**
   * The coordinators to dial, in the list's order: the listed ones, or the
   * enrollment coordinator alone while no list is known. The enrollment
   * coordinator's entry keeps the addresses the agent was given for it.
   */
  entries(): CoordinatorEntry[] {
    const listed = this.#list?.coordinators
    if (listed === undefined) return [this.#enrolled]
    return listed.map((c) =>
      c.peerId === this.#enrolled.peerId
        ? { peerId: c.peerId, addrs: [...new Set([...this.#enrolled.addrs, ...c.addrs])] }
        : c,
    )
  }

  /** The entry to dial once `lost` is: the next one in the list's order, round the end. */
  after(lost: string): CoordinatorEntry {
    const entries = this.entries()
    const at = entries.findIndex((c) => c.peerId === lost)
    return entries[(at + 1) % entries.length] as CoordinatorEntry
  }

  /** The enrollment coordinator: the first one dialed after a start. */
  get enrolled(): CoordinatorEntry {
    return this.#enrolled
  }
}
