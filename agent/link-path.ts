/**
 * Which connection the control link (link.ts) runs over: an open one to the
 * coordinator (a direct one first), else a dial, else a dial to what discovery
 * found; and, once it runs over a direct one, the relayed ones it replaces.
 */
import type { Connection, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { errorMessage } from '../lib/index.ts'
import { connectionPath, dialThroughRelays, type FleetHost, openConnectionTo } from '../net/index.ts'
import type { ConnectionPath } from '../protocol/index.ts'
import { LinkClosedError } from './link-errors.ts'

/** Where a control session runs. */
export interface LinkPath {
  path: ConnectionPath
  addr: string
}

/** The control link moved from a relayed connection to a direct one without dropping the agent's session. */
export interface PathUpgrade {
  from: LinkPath
  to: LinkPath
}

export interface ConnectInit {
  host: FleetHost
  coordinator: PeerId
  coordinatorAddrs: Multiaddr[]
  dialTimeoutMs: number
  discover?: (signal: AbortSignal) => Promise<Multiaddr[]>
  log: (msg: string) => void
  /** Ends the dial early (its owner stops); each step also has `dialTimeoutMs`. */
  signal?: AbortSignal
}

/**
 * A connection to the coordinator: an open one if there is any (a relayed
 * one too: libp2p's own dial would skip it and open a second), else a dial
 * to the known addresses, else a dial to what `discover` finds.
 */
export async function connectToCoordinator(init: ConnectInit): Promise<Connection> {
  const { host, coordinator, coordinatorAddrs, discover } = init
  const budget = () =>
    init.signal === undefined
      ? AbortSignal.timeout(init.dialTimeoutMs)
      : AbortSignal.any([init.signal, AbortSignal.timeout(init.dialTimeoutMs)])
  const reuse = openConnectionTo(host, coordinator)
  if (reuse !== undefined) return reuse
  if (coordinatorAddrs.length > 0) await host.peerStore.merge(coordinator, { multiaddrs: coordinatorAddrs })
  let dialError: Error
  try {
    // through whichever of its relays answers first, not each dead one's timeout in turn
    return await dialThroughRelays(host, coordinator, { signal: budget(), log: init.log })
  } catch (err) {
    if (discover === undefined) throw err
    dialError = err as Error
  }
  let found: Multiaddr[]
  try {
    found = await discover(budget())
  } catch (err) {
    throw new LinkClosedError(
      `cannot reach the coordinator (${dialError.message}) and looking it up failed: ${errorMessage(err)}`,
    )
  }
  init.log(`looked the coordinator up: ${found.map((a) => a.toString()).join(', ')}`)
  return await dialThroughRelays(host, coordinator, { signal: budget(), log: init.log })
}

/** An open direct (not relayed) connection to `peer`. */
export function directConnectionTo(
  host: Pick<FleetHost, 'getConnections'>,
  peer: PeerId,
): Connection | undefined {
  return host.getConnections(peer).find((c) => c.status === 'open' && connectionPath(c) === 'direct')
}

/**
 * Closes the relayed connections to `peer` once the control link runs over a
 * direct one: nothing else uses them, and a relay's capacity is finite.
 */
export function closeRelayedTo(host: Pick<FleetHost, 'getConnections'>, peer: PeerId): void {
  for (const c of host.getConnections(peer)) {
    if (c.status !== 'open' || connectionPath(c) !== 'relayed') continue
    c.close({ signal: AbortSignal.timeout(5_000) }).catch((err: unknown) => c.abort(err as Error))
  }
}
