/**
 * A repair of the circuit relay v2 server's reservation expiry, for every host
 * that runs a relay server (relays and coordinators); see
 * {@link repairReservationExpiry}.
 */
import type { RelayReservation } from '@libp2p/circuit-relay-v2'
import type { PeerId } from '@libp2p/interface'
import type { FleetHost } from './host.ts'

/**
 * Works around a bug in retimeable-signal 1.0.1, which the circuit relay v2
 * server uses to expire reservations: `reset()` arms a new timer but cannot
 * disarm the one the previous `reset()` armed. So the *second* refresh of a
 * reservation does not cancel the first refresh's timer, and the relay forgets
 * the reservation (and cuts every relayed connection to that peer) one TTL
 * after the first refresh, while the client believes it holds it until its
 * next refresh, almost a TTL later: with the default 2 h TTL, a host behind NAT
 * is unreachable for ~1 h 50 min of every ~5 h 45 min. (Seen in the lab with a
 * 32 s TTL: refreshes at 30 s and 60 s, reservation gone at 62 s.)
 *
 * The repair takes over each reservation's expiry timer when the server stores
 * the reservation: it disarms the library's first timer (`clear()` still works
 * before any reset), keeps its own timer that every refresh re-arms, and fires
 * the signal, through the library's own `reset(0)`, only at the real expiry.
 *
 * Returns a function that undoes it. Run it on every host with a relay server.
 */
export function repairReservationExpiry(host: FleetHost): () => void {
  const relay = host.services.relay
  if (relay === undefined) return () => {}
  const map = relay.reservations
  const timers = new Map<RelayReservation['signal'], NodeJS.Timeout>()
  const repair = (peer: PeerId, reservation: RelayReservation): void => {
    const signal = reservation.signal
    const fire = signal.reset.bind(signal)
    const ttl = Math.max(1, reservation.expiry.getTime() - Date.now())
    const arm = (ms: number) => {
      clearTimeout(timers.get(signal))
      const timer = setTimeout(() => {
        timers.delete(signal)
        // its abort listener deletes whatever the map holds for the peer,
        // which may be a newer reservation by now
        if (!signal.aborted && map.get(peer)?.signal === signal) fire(0)
      }, ms)
      timer.unref()
      timers.set(signal, timer)
    }
    signal.clear()
    signal.reset = (ms?: number) => arm(ms ?? ttl)
    signal.clear = () => {
      clearTimeout(timers.get(signal))
      timers.delete(signal)
    }
    arm(ttl)
  }
  const seen = new WeakSet<object>()
  const set = map.set
  // the server stores the reservation right after creating its signal, and
  // again on every refresh
  map.set = (peer, reservation) => {
    if (!seen.has(reservation.signal)) {
      seen.add(reservation.signal)
      repair(peer, reservation)
    }
    set.call(map, peer, reservation)
  }
  return () => {
    map.set = set
    for (const timer of timers.values()) clearTimeout(timer)
    timers.clear()
  }
}
