/**
 * Dialing a peer that is reachable through several relays (a coordinator
 * behind NAT reserved on each of them) through whichever relay answers first.
 *
 * libp2p dials a peer's addresses one after the other, each with its own
 * 6 s timeout, and joins concurrent dials to one peer into that same sequence.
 * So when the first relay in the list is dead without a RST (its host is gone,
 * or our NAT dropped the mapping) every dial waits out that relay before it
 * tries the next; worse, a connection to the dead relay that still looks open
 * is reused, and the dial hangs on it. Relays are distinct peers, so they can
 * be asked in parallel: each relay is checked (an open connection must answer
 * a ping within `probeMs`, or it is aborted and the relay dialled afresh), and
 * the peer is dialled through each relay as soon as that relay answers, first
 * answer first. Direct addresses, if any, are dialled only when no relay got
 * us through: a peer with relay addresses is behind NAT, its direct addresses
 * are mostly its LAN's, and libp2p would join a relay dial started meanwhile
 * to the direct one, behind its timeouts. (Hole punching makes the path
 * direct afterwards where the NATs allow.)
 *
 * @example
 *
 * ```ts
 * // the coordinator's circuit addresses on relays A and B are in the peer store (token, identify)
 * const conn = await dialThroughRelays(host, coordinator, { signal: AbortSignal.timeout(20_000) })
 * ```
 */
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { errorMessage } from '../lib/index.ts'
import { type FleetHost, isCircuitAddr, isRelayed } from './host.ts'
import { probeConnection, RelayProbeError } from './relay-probe.ts'

/** No relay of the peer answered, or none let us through, and no direct address worked. */
export class RelayDialError extends Error {
  override name = 'RelayDialError'
}

export interface RelayDialOptions {
  signal: AbortSignal
  /** Addresses to try besides those in the peer store (which identify keeps current) */
  addrs?: readonly Multiaddr[]
  /**
   * How long an open connection to a relay may take to answer a ping before
   * it counts as dead and is aborted.
   *
   * @default 1_000
   */
  probeMs?: number
  log?: (msg: string) => void
}

interface RelayRoute {
  /** `<relay address>/p2p/<relay id>` */
  relay: Multiaddr
  relayPeer: PeerId
  circuits: Multiaddr[]
}

/** Circuit addresses grouped by the relay they go through (in first-seen order). */
export function relayRoutes(addrs: readonly Multiaddr[]): RelayRoute[] {
  const routes = new Map<string, RelayRoute>()
  for (const addr of addrs) {
    if (!isCircuitAddr(addr)) continue
    const [before] = addr.toString().split('/p2p-circuit')
    const relay = multiaddr(before ?? '')
    const id = relay.getComponents().findLast((c) => c.name === 'p2p')?.value
    if (id === undefined) continue
    const key = relay.toString()
    const route = routes.get(key) ?? { relay, relayPeer: peerIdFromString(id), circuits: [] }
    if (!route.circuits.some((c) => c.equals(addr))) route.circuits.push(addr)
    routes.set(key, route)
  }
  return [...routes.values()]
}

/**
 * A connection to `peer` over its known addresses (`options.addrs` and the
 * peer store's), through the first relay that answers; see the module doc.
 * Without circuit addresses among them this is libp2p's own dial of the peer.
 */
export async function dialThroughRelays(
  host: FleetHost,
  peer: PeerId,
  options: RelayDialOptions,
): Promise<Connection> {
  const stored = await host.peerStore.get(peer).then(
    (p) => p.addresses.map((a) => a.multiaddr),
    () => [],
  )
  // each ending in /p2p/<peer>: the peer store keeps them without, and libp2p takes the
  // last /p2p/ of a multiaddr for the peer to dial (for a bare circuit, the relay's)
  const addrs: Multiaddr[] = []
  for (const a of [...(options.addrs ?? []), ...stored]) {
    const full = a.getComponents().at(-1)?.name === 'p2p' ? a : a.encapsulate(`/p2p/${peer}`)
    if (!addrs.some((k) => k.equals(full))) addrs.push(full)
  }
  const routes = relayRoutes(addrs)
  if (routes.length === 0) return host.dial(peer, { signal: options.signal })
  // the losers' dials end as soon as one wins (not the winner's: its signal may still be watched)
  const losers = routes.map(() => new AbortController())
  const attempts = routes.map(async (route, i) => {
    const signal = AbortSignal.any([options.signal, losers[i]!.signal])
    await relayAnswers(host, route, signal, options)
    const conn = await host.dial(route.circuits, { signal }).catch((err: unknown) => {
      throw new RelayDialError(`through relay ${route.relayPeer}: ${errorMessage(err)}`, { cause: err })
    })
    return { conn, i }
  })
  let causes: unknown[]
  try {
    const won = await Promise.any(attempts)
    for (const [i, c] of losers.entries()) if (i !== won.i) c.abort(new RelayDialError('another relay won'))
    return won.conn
  } catch (err) {
    causes = err instanceof AggregateError ? err.errors : [err]
  }
  const direct = addrs.filter((a) => !isCircuitAddr(a))
  if (direct.length > 0) {
    try {
      return await host.dial(direct, { signal: options.signal })
    } catch (err) {
      causes.push(err)
    }
  }
  throw new RelayDialError(
    `cannot reach ${peer} directly or through any of its ${routes.length} relays: ` +
      causes.map((e) => firstLine(e)).join('; '),
    { cause: causes[0] },
  )
}

/** Resolves once `route`'s relay is connected and answering; rejects if it cannot be reached. */
async function relayAnswers(
  host: FleetHost,
  route: RelayRoute,
  signal: AbortSignal,
  options: RelayDialOptions,
): Promise<void> {
  const open = host.getConnections(route.relayPeer).filter((c) => c.status === 'open' && !isRelayed(c))
  for (const conn of open) {
    try {
      await probeConnection(conn, options.probeMs ?? 1_000)
      return
    } catch (err) {
      // a ping already in flight says nothing about the path: count it as alive
      if (!(err instanceof RelayProbeError)) return
      options.log?.(
        `relay ${route.relayPeer} does not answer on ${conn.remoteAddr}; dropping that connection`,
      )
      conn.abort(err)
    }
  }
  try {
    await host.dial(route.relay, { signal })
  } catch (err) {
    throw new RelayDialError(`relay ${route.relay}: ${errorMessage(err)}`, { cause: err })
  }
}

function firstLine(err: unknown): string {
  return errorMessage(err).split('\n')[0] ?? ''
}
