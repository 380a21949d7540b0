/**
 * Keeps a host reachable through circuit relays it does not control the
 * uptime of: one reservation per relay, re-made whenever it is lost.
 *
 * libp2p 3 (`@libp2p/circuit-relay-v2` 4.x) refreshes a reservation before it
 * expires, but only while the connection that made it stays open. When that
 * connection closes (relay restart, our NAT dropping its mapping, a network
 * change) the transport's reservation store drops the reservation, the relay
 * listener withdraws the `/p2p-circuit` addresses, and nothing ever reserves
 * again: the host silently becomes unreachable. A NAT that drops its mapping
 * without a RST is worse: the dead connection looks open until libp2p's
 * connection monitor (a ping every 20 s, adaptive timeout) gives up on it.
 *
 * The keeper, per relay:
 *
 * 1. dials the relay (a direct connection; reservations over a relayed one are
 *    refused), then reserves: the first time by listening on
 *    `<relay>/p2p-circuit` through the transport manager, which creates the
 *    relay listener that turns the reservation into advertised addresses;
 *    afterwards through the transport's reservation store (`addRelay(relay,
 *    'configured')`), whose `relay:created-reservation` event makes that same
 *    listener advertise the addresses again. Listening again instead would
 *    leave one more listener behind per renewal: libp2p never removes a relay
 *    listener whose reservation was lost.
 * 2. probes the relay connection every `keepaliveMs` with a ping on that very
 *    connection; a probe that fails aborts the connection, which makes the
 *    store drop the reservation.
 * 3. on `relay:removed` for its relay, reports the loss and starts over from 1
 *    after a jittered, growing backoff (lib/backoff.ts `RecoveryBackoff`): for
 *    `backoffQuickForMs` after the last reservation the retries stay at most
 *    `backoffQuickMaxMs` apart, so a relay that restarts is reserved on again
 *    within about that much of being back, and a connection to the relay
 *    opening (someone else reached it) starts the backoff over and retries at
 *    once. Each relay has its own keeper: losing one never touches the
 *    reservations on the others.
 *
 * The probe is in relay-probe.ts, the typed access to libp2p's transport
 * manager and reservation store in reservation-store.ts.
 *
 * @example
 *
 * ```ts
 * const internals = transportAccess()
 * const host = await createHost({ role: 'coordinator', privateKey, extraServices: { fleetmeshTransports: internals.service } })
 * const keeper = new ReservationKeeper({ host, transportManager: internals.get(), relays: [relayAddr], onEvent: console.log })
 * keeper.start()
 * // …
 * await keeper.stop()
 * ```
 */
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { errorMessage, RecoveryBackoff, raceSignal, WakeableSleep } from '../lib/index.ts'
import { type FleetHost, isCircuitAddr, isRelayed } from './host.ts'
import { probeConnection, RelayProbeError } from './relay-probe.ts'
import {
  type RelayEventDetail,
  ReservationKeeperError,
  type ReservationStoreLike,
  reservationStoreOf,
  type TransportManagerAccess,
} from './reservation-store.ts'

/** What the keeper reports through `onEvent`, per relay */
export type ReservationEvent =
  | {
      /** `ok`: first reservation since start; `renewed`: re-made after a loss, or refreshed by libp2p */
      status: 'ok' | 'renewed'
      relay: string
      /** The `/p2p-circuit` addresses this host is now reachable at */
      addrs: string[]
      /** When the relay will drop the reservation unless refreshed (ms since epoch) */
      expiresAt: number
      /** True when libp2p refreshed a reservation it still held */
      refresh: boolean
    }
  | { status: 'lost'; relay: string; reason: string }
  | { status: 'failed'; relay: string; error: string; retryInMs: number }

export interface ReservationKeeperInit {
  host: FleetHost
  /** From {@link transportAccess} */
  transportManager: TransportManagerAccess
  /** Relay multiaddrs, each ending in `/p2p/<relay peer id>` */
  relays: string[]
  /**
   * How often to probe each relay connection. A probe that is not answered
   * within twice this long aborts the connection and so loses the reservation.
   *
   * @default 10_000
   */
  keepaliveMs?: number
  /** @default 500 */
  backoffInitialMs?: number
  /** @default 60_000 */
  backoffMaxMs?: number
  /**
   * The longest pause between tries while the relay held our reservation less
   * than `backoffQuickForMs` ago: a relay restart is over within seconds.
   *
   * @default 1_000
   */
  backoffQuickMaxMs?: number
  /** @default 120_000 */
  backoffQuickForMs?: number
  /**
   * How long one dial plus reservation may take.
   *
   * @default 15_000
   */
  reserveTimeoutMs?: number
  onEvent?: (event: ReservationEvent) => void
  log?: (msg: string) => void
}

type Settings = Required<Omit<ReservationKeeperInit, 'onEvent' | 'log'>> &
  Pick<ReservationKeeperInit, 'onEvent' | 'log'>

/** Holds and renews one reservation per configured relay; see the module doc. */
export class ReservationKeeper {
  readonly #settings: Settings
  readonly #store: ReservationStoreLike
  readonly #relays: RelayKeeper[]
  #started = false

  constructor(init: ReservationKeeperInit) {
    this.#settings = {
      keepaliveMs: 10_000,
      backoffInitialMs: 500,
      backoffMaxMs: 60_000,
      backoffQuickMaxMs: 1_000,
      backoffQuickForMs: 120_000,
      reserveTimeoutMs: 15_000,
      ...init,
    }
    if (this.#settings.keepaliveMs < 100)
      throw new RangeError(`keepaliveMs must be at least 100, got ${this.#settings.keepaliveMs}`)
    this.#store = reservationStoreOf(init.transportManager)
    this.#relays = init.relays.map((addr) => {
      const ma = multiaddr(addr)
      const id = ma.getComponents().at(-1)
      if (id?.name !== 'p2p' || id.value === undefined || isCircuitAddr(ma))
        throw new ReservationKeeperError(
          `relay address "${addr}" must be a direct address ending in /p2p/<relay peer id>`,
        )
      return new RelayKeeper(this.#settings, this.#store, ma, peerIdFromString(id.value))
    })
  }

  /** Whether every configured relay currently holds a reservation for us. */
  get reserved(): boolean {
    return this.#relays.every((r) => this.#store.hasReservation(r.peer))
  }

  /** How many of the configured relays currently hold a reservation for us (for metrics). */
  get held(): number {
    return this.#relays.filter((r) => this.#store.hasReservation(r.peer)).length
  }

  start(): void {
    if (this.#started) return
    this.#started = true
    for (const r of this.#relays) r.start()
  }

  async stop(): Promise<void> {
    await Promise.all(this.#relays.map((r) => r.stop()))
  }
}

/** Serialises first listens: see {@link RelayKeeper.#reserve}. */
let listenLock: Promise<unknown> = Promise.resolve()

class RelayKeeper {
  readonly peer: PeerId
  readonly #s: Settings
  readonly #store: ReservationStoreLike
  readonly #addr: Multiaddr
  #listening = false
  #everReserved = false
  #stopped = false
  #loop: Promise<void> | undefined
  /** The pause between tries, which stop() cuts short */
  readonly #pause = new WakeableSleep()
  /** Ends a wait for the reservation's loss, on stop */
  #endWait: (() => void) | undefined
  /** Cuts a dial or reservation in progress short on stop */
  readonly #stopping = new AbortController()
  readonly #backoff: RecoveryBackoff
  /** Whether the loop is pausing after a failure (and so a sighting of the relay should end it) */
  #retrying = false

  constructor(settings: Settings, store: ReservationStoreLike, addr: Multiaddr, peer: PeerId) {
    this.#s = settings
    this.#store = store
    this.#addr = addr
    this.peer = peer
    this.#backoff = new RecoveryBackoff({
      initialMs: settings.backoffInitialMs,
      maxMs: settings.backoffMaxMs,
      quickMaxMs: settings.backoffQuickMaxMs,
      quickForMs: settings.backoffQuickForMs,
    })
  }

  start(): void {
    this.#s.host.addEventListener('connection:open', this.#onOpen)
    this.#loop ??= this.#run()
  }

  /**
   * A direct connection to the relay opened while we wait to retry (the
   * relay is back, and something else reached it first): retry now.
   */
  readonly #onOpen = (evt: CustomEvent<Connection>): void => {
    if (!this.#retrying || !evt.detail.remotePeer.equals(this.peer) || isRelayed(evt.detail)) return
    this.#backoff.seen()
    this.#pause.wake()
  }

  async stop(): Promise<void> {
    this.#s.host.removeEventListener('connection:open', this.#onOpen)
    this.#stopped = true
    this.#stopping.abort(new ReservationKeeperError('stopping'))
    this.#pause.wake()
    this.#endWait?.()
    await this.#loop
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        await this.#reserve()
        this.#backoff.succeeded()
        this.#announce(this.#everReserved ? 'renewed' : 'ok', false)
        this.#everReserved = true
        const reason = await this.#untilLost()
        if (this.#stopped) break
        // the loss is a moment of the relay working: quick retries count from here
        this.#backoff.succeeded()
        this.#emit({ status: 'lost', relay: this.#addr.toString(), reason })
      } catch (err) {
        if (this.#stopped) break
        const retryInMs = Math.round(this.#backoff.next())
        this.#emit({ status: 'failed', relay: this.#addr.toString(), error: errorMessage(err), retryInMs })
        this.#retrying = true
        try {
          if (!this.#stopped) await this.#pause.sleep(retryInMs)
        } finally {
          this.#retrying = false
        }
        continue
      }
      // A lost reservation is usually a dead path that a fresh dial fixes at
      // once; a short jittered pause still spreads a fleet of hosts that all
      // lost the same relay.
      if (!this.#stopped) await this.#pause.sleep(this.#s.backoffInitialMs * Math.random())
    }
  }

  async #reserve(): Promise<void> {
    const { host, transportManager, reserveTimeoutMs } = this.#s
    const signal = AbortSignal.any([AbortSignal.timeout(reserveTimeoutMs), this.#stopping.signal])
    // Dial first, ourselves: a dial failure inside the reservation store marks
    // the relay invalid for the rest of the process's life.
    const conn = await host.dial(this.#addr, { signal }).catch((err: unknown) => {
      throw new ReservationKeeperError(`cannot reach relay ${this.#addr}: ${firstLine(err)}`, { cause: err })
    })
    if (isRelayed(conn))
      throw new ReservationKeeperError(`the connection to relay ${this.peer} is itself relayed`)
    if (this.#store.hasReservation(this.peer)) return
    if (!this.#listening) {
      // A failed listen leaves its listener behind; find it to close it.
      const run = listenLock.then(async () => {
        const before = new Set(transportManager.getListeners())
        try {
          await transportManager.listen([this.#addr.encapsulate('/p2p-circuit')])
        } catch (err) {
          const leaked = transportManager.getListeners().filter((l) => !before.has(l))
          // closing a relay listener cancels every reservation in the store,
          // so only while there are none
          if (this.#store.reservationCount() === 0) await Promise.all(leaked.map((l) => l.close()))
          throw new ReservationKeeperError(`could not reserve on relay ${this.peer}: ${firstLine(err)}`, {
            cause: err,
          })
        }
      })
      listenLock = run.catch(() => {})
      await run
      this.#listening = true
      return
    }
    await raceSignal(this.#store.addRelay(this.peer, 'configured'), signal).catch((err: unknown) => {
      throw new ReservationKeeperError(`could not reserve on relay ${this.peer}: ${firstLine(err)}`, {
        cause: err,
      })
    })
  }

  /** Resolves with the reason once the reservation is gone (or on stop). */
  #untilLost(): Promise<string> {
    const { host, keepaliveMs } = this.#s
    return new Promise<string>((resolve) => {
      let probing = false
      const done = (reason: string) => {
        clearInterval(timer)
        this.#store.removeEventListener('relay:removed', onRemoved)
        this.#store.removeEventListener('relay:created-reservation', onCreated)
        this.#endWait = undefined
        resolve(reason)
      }
      const onRemoved = (evt: CustomEvent<RelayEventDetail>) => {
        if (evt.detail.relay.equals(this.peer)) done('the connection to the relay closed or a refresh failed')
      }
      const onCreated = (evt: CustomEvent<RelayEventDetail>) => {
        // libp2p's own refresh, on the connection we hold
        if (evt.detail.relay.equals(this.peer)) this.#announce('renewed', true)
      }
      const timer = setInterval(() => {
        if (probing) return
        if (!this.#store.hasReservation(this.peer)) {
          done('the reservation disappeared')
          return
        }
        const conns = host.getConnections(this.peer).filter((c) => c.status === 'open' && !isRelayed(c))
        if (conns.length === 0) return // the store's connection:close handler will remove it
        probing = true
        void Promise.all(
          conns.map((c) =>
            probeConnection(c, keepaliveMs * 2).catch((err: unknown) => {
              if (!(err instanceof RelayProbeError)) return
              this.#log(`relay ${this.peer}: ${err.message}; dropping the connection`)
              c.abort(err)
            }),
          ),
        ).finally(() => {
          probing = false
        })
      }, keepaliveMs)
      this.#store.addEventListener('relay:removed', onRemoved)
      this.#store.addEventListener('relay:created-reservation', onCreated)
      this.#endWait = () => done('stopping')
    })
  }

  #announce(status: 'ok' | 'renewed', refresh: boolean): void {
    const reservation = this.#store.getReservation(this.peer)
    const addrs = this.#s.host
      .getMultiaddrs()
      .filter((ma) => isCircuitAddr(ma) && ma.toString().includes(`/p2p/${this.peer}/p2p-circuit`))
      .map((ma) => ma.toString())
    // an empty list right after listening: the listener confirms addresses
    // in a microtask; what the relay gave us is authoritative anyway
    const fromReservation = (reservation?.addrs ?? []).map((b) =>
      multiaddr(b).encapsulate(`/p2p-circuit/p2p/${this.#s.host.peerId}`).toString(),
    )
    this.#emit({
      status,
      relay: this.#addr.toString(),
      addrs: addrs.length > 0 ? addrs : fromReservation,
      // the relay sends the expiry in seconds since the epoch
      expiresAt: reservation === undefined ? 0 : Number(reservation.expire) * 1000,
      refresh,
    })
  }

  #emit(event: ReservationEvent): void {
    this.#s.onEvent?.(event)
  }

  #log(msg: string): void {
    this.#s.log?.(msg)
  }
}

/** The line of a (libp2p) error worth showing in a one-line event */
function firstLine(err: unknown): string {
  const e = err as Error
  if (e instanceof AggregateError && e.errors.length > 0) return firstLine(e.errors[0])
  const lines = String(e.message ?? e)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('at '))
  // UnsupportedListenAddressesError lists "<addr>: <stack>" per failed address
  // after a generic first line; the cause is the first nested "…Error: " line
  const nested = lines
    .slice(1)
    .map((l) => /[A-Za-z]*Error: (.*)$/.exec(l)?.[1])
    .find((m) => m !== undefined)
  return nested ?? lines[0] ?? e.name
}
