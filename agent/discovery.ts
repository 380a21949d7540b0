/**
 * Finding the coordinator by its peer id when the addresses the agent knows
 * (from the enrollment token, or from the last identify) no longer work: the
 * coordinator moved, changed its IP, or sits behind NAT and now holds its
 * reservation on another relay.
 *
 * Coordinators and relays are servers in the fleet's private kad-dht, and a
 * relay knows every peer connected to it with the addresses that peer
 * announces (identify), including its `/p2p-circuit` ones. So an agent that
 * reaches any bootstrap relay can ask the DHT for the coordinator's peer id and
 * get addresses that reach it right now. The answer is only a hint: the dial
 * that follows is authenticated (Noise) as the pinned coordinator peer id, so a
 * lying DHT peer can at worst make the dial fail.
 *
 * @example
 *
 * ```ts
 * const find = coordinatorFinder({ host, coordinator, bootstrap: [multiaddr('/ip4/203.0.113.5/tcp/4001/p2p/12D3Koo…')] })
 * const addrs = await find(AbortSignal.timeout(20_000))
 * ```
 */
import type { PeerId } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { CodedError, errorMessage } from '../lib/index.ts'
import { type FleetHost, relayRoutes } from '../net/index.ts'

export type DiscoveryErrorCode = 'no-bootstrap' | 'not-found'

export class DiscoveryError extends CodedError<DiscoveryErrorCode> {
  override name = 'DiscoveryError'
}

export interface CoordinatorFinderInit {
  host: FleetHost
  coordinator: PeerId
  /** Relays (or other DHT servers) to ask, as multiaddrs ending in /p2p/<peer id> */
  bootstrap: Multiaddr[]
}

/** Looks the coordinator up; resolves with the addresses found (also merged into the peer store). */
export type CoordinatorFinder = (signal: AbortSignal) => Promise<Multiaddr[]>

export function coordinatorFinder(init: CoordinatorFinderInit): CoordinatorFinder {
  const { host, coordinator, bootstrap } = init
  return async (signal) => {
    // libp2p's bootstrap module dials its list once, at start-up; after a
    // network change the DHT may have nobody left to ask
    const connected = bootstrap.some((ma) => {
      const id = ma.getComponents().findLast((c) => c.name === 'p2p')?.value
      return id !== undefined && host.getConnections().some((c) => c.remotePeer.toString() === id)
    })
    if (!connected) {
      // the first peer that answers will do: one whose host is gone would hold
      // the lookup until `signal` ends
      try {
        await Promise.any(bootstrap.map((ma) => host.dial(ma, { signal })))
      } catch (err) {
        const causes = err instanceof AggregateError ? err.errors : [err]
        const why = causes.map((e, i) => `${bootstrap[i]}: ${errorMessage(e)}`).join('; ')
        throw new DiscoveryError(
          'no-bootstrap',
          `cannot reach any bootstrap peer to look the coordinator up (${why || 'none configured'})`,
        )
      }
    }
    let found: Multiaddr[]
    try {
      // useCache: false, or kad-dht answers from our own peer store: the stale
      // addresses that just failed
      const info = await host.peerRouting.findPeer(coordinator, { signal, useCache: false })
      found = info.multiaddrs
    } catch (err) {
      throw new DiscoveryError(
        'not-found',
        `the DHT does not know coordinator ${coordinator} (${errorMessage(err)}); ` +
          'is it running, and bootstrapped to or holding a reservation on one of the relays?',
        { cause: err },
      )
    }
    if (found.length === 0)
      throw new DiscoveryError('not-found', `the DHT knows coordinator ${coordinator} but no address for it`)
    return found
  }
}

/**
 * The relays named in the coordinator's circuit addresses (`<relay>/p2p/<id>/p2p-circuit…`),
 * as `<relay>/p2p/<id>`: without `--bootstrap`, the agent asks them for the coordinator.
 */
export function relaysOf(coordinatorAddrs: readonly string[]): Multiaddr[] {
  return relayRoutes(coordinatorAddrs.map((a) => multiaddr(a))).map((r) => r.relay)
}
