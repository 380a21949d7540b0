/**
 * The parts of libp2p's circuit relay transport that the reservation keeper
 * reaches into: the transport manager (a component, not reachable from the
 * `Libp2p` object) and the transport's reservation store (a public field of a
 * class the package does not export). Both are typed here by what the keeper
 * uses and checked at run time, so a libp2p upgrade that changes them fails
 * at start with a message saying so, not later with a TypeError.
 */
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

/** The keeper could not set up, reach its relay, or reserve on it. */
export class ReservationKeeperError extends Error {
  override name = 'ReservationKeeperError'
}

/** The listener surface of a libp2p transport listener that the keeper touches. */
export interface ListenerLike {
  getAddrs(): Multiaddr[]
  close(): Promise<void>
}

/**
 * The part of libp2p's transport manager (a component, not reachable from the
 * `Libp2p` object) the keeper needs.
 */
export interface TransportManagerAccess {
  listen(addrs: Multiaddr[]): Promise<void>
  getTransports(): unknown[]
  getListeners(): ListenerLike[]
}

export interface RelayEventDetail {
  relay: PeerId
}

/**
 * The circuit relay transport's reservation store: a public field of
 * `CircuitRelayTransport`, whose class the package does not export, so it is
 * checked at run time.
 */
export interface ReservationStoreLike {
  hasReservation(peer: PeerId): boolean
  getReservation(peer: PeerId): { expire: bigint; addrs: Uint8Array[] } | undefined
  reservationCount(): number
  addRelay(peer: PeerId, type: 'configured'): Promise<unknown>
  addEventListener(
    type: 'relay:removed' | 'relay:created-reservation',
    listener: (evt: CustomEvent<RelayEventDetail>) => void,
  ): void
  removeEventListener(
    type: 'relay:removed' | 'relay:created-reservation',
    listener: (evt: CustomEvent<RelayEventDetail>) => void,
  ): void
}

/**
 * A libp2p service that only captures the transport manager, so code holding
 * the `Libp2p` object can reach it. Register `service` under any unused key in
 * `createHost({ extraServices })`, then call `get()` once the host exists.
 */
export function transportAccess(): {
  service: (components: { transportManager: TransportManagerAccess }) => object
  get(): TransportManagerAccess
} {
  let captured: TransportManagerAccess | undefined
  return {
    service: (components) => {
      captured = components.transportManager
      return {}
    },
    get() {
      if (captured === undefined)
        throw new ReservationKeeperError('the transport access service was not registered on the host')
      return captured
    },
  }
}

/** The circuit relay transport's reservation store, found among the transport manager's transports. */
export function reservationStoreOf(tm: TransportManagerAccess): ReservationStoreLike {
  for (const transport of tm.getTransports()) {
    if (typeof transport !== 'object' || transport === null) continue
    if (
      (transport as { [Symbol.toStringTag]?: unknown })[Symbol.toStringTag] !==
      '@libp2p/circuit-relay-v2-transport'
    )
      continue
    const store = (transport as { reservationStore?: unknown }).reservationStore
    const fns = ['hasReservation', 'getReservation', 'reservationCount', 'addRelay', 'addEventListener']
    if (
      typeof store === 'object' &&
      store !== null &&
      fns.every((f) => typeof (store as Record<string, unknown>)[f] === 'function')
    )
      return store as ReservationStoreLike
  }
  throw new ReservationKeeperError(
    'the circuit relay transport has no reservation store this keeper understands; ' +
      '@libp2p/circuit-relay-v2 changed, check net/reservation-store.ts against it',
  )
}
