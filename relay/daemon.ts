/**
 * The relay daemon: a public host that lets peers behind NAT be reached
 * (circuit relay v2 server with operator-set limits) and anchors the fleet's
 * private DHT (server mode), so agents can look a coordinator up by peer id.
 * It holds no fleet state and needs no fleet configuration, only its own
 * identity:
 *
 *   <state>/identity.key   the relay's Ed25519 key (= its PeerId), created on first start
 *
 * @example
 *
 * ```ts
 * const relay = await startRelay({ stateDir: '/var/lib/fleetmesh-relay', listen: ['/ip4/0.0.0.0/tcp/4001'] })
 * console.log(relay.host.getMultiaddrs())
 * await relay.stop()
 * ```
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { RelayReservation } from '@libp2p/circuit-relay-v2'
import { identifyPush } from '@libp2p/identify'
import type { PeerId } from '@libp2p/interface'
import { loadOrCreateIdentity } from '../keys/index.ts'
import {
  createHost,
  type FleetHost,
  keepRuntimeFile,
  pruneSupersededConnections,
  type RelayLimits,
  snapshotHost,
  startObserver,
} from '../net/index.ts'
import { IDENTITY_FILE } from '../protocol/index.ts'

export interface RelayOptions {
  stateDir: string
  listen?: string[]
  announce?: string[]
  /** Other relays or coordinators to join the DHT through */
  bootstrap?: string[]
  relay?: RelayLimits
  /** TCP ports for the NAT observer (hole punching needs two to tell symmetric NATs apart). */
  observerPorts?: number[]
  log?: (msg: string) => void
}

export const DEFAULT_OBSERVER_PORTS = [4002, 4003]

export interface RunningRelay {
  host: FleetHost
  /** Peers currently holding a reservation */
  reservations(): number
  observerPorts: readonly number[]
  stop(): Promise<void>
}

export async function startRelay(options: RelayOptions): Promise<RunningRelay> {
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
  const key = await loadOrCreateIdentity(join(options.stateDir, IDENTITY_FILE))
  const host = await createHost({
    role: 'relay',
    privateKey: key.toLibp2p(),
    ...(options.listen ? { listen: options.listen } : {}),
    ...(options.announce ? { announce: options.announce } : {}),
    ...(options.bootstrap ? { bootstrap: options.bootstrap } : {}),
    ...(options.relay ? { relay: options.relay } : {}),
    // receives the address updates (new /p2p-circuit addresses) of the hosts
    // that reserve here, so DHT lookups through this relay return them
    extraServices: { identifyPush: identifyPush() },
  })
  const unprune = pruneSupersededConnections(host, options.log ? { log: options.log } : {})
  const unrepair = repairReservationExpiry(host)
  let observer: Awaited<ReturnType<typeof startObserver>> | undefined
  try {
    observer = options.observerPorts?.length
      ? await startObserver({ host: '0.0.0.0', ports: options.observerPorts })
      : undefined
  } catch (err) {
    await host.stop()
    throw err
  }
  const reservations = () => host.services.relay?.reservations.size ?? 0
  const runtime = keepRuntimeFile(options.stateDir, () =>
    snapshotHost(host, 'relay', { reservations: reservations(), observerPorts: observer?.ports ?? [] }),
  )
  return {
    host,
    reservations,
    observerPorts: observer?.ports ?? [],
    async stop() {
      unprune()
      unrepair()
      await runtime.stop()
      await observer?.close()
      await host.stop()
    },
  }
}

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
