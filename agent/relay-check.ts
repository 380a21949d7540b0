/**
 * After a relayed control session died: if the agent's own connection to the
 * relay is dead too (its NAT dropped the mapping), abort it, or the next
 * relayed dial would reuse it and hang until libp2p's connection monitor
 * notices. Used by the control link (link.ts).
 */
import type { Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { connectionPath, type FleetHost } from '../net/index.ts'

/** Pings the relay `relayed` went through (within `timeoutMs`) and aborts direct connections to it that do not answer. */
export async function dropDeadRelay(
  host: FleetHost,
  relayed: Connection,
  timeoutMs: number,
  log: (msg: string) => void,
): Promise<void> {
  const [relayPart] = relayed.remoteAddr.toString().split('/p2p-circuit')
  const relayId = multiaddr(relayPart ?? '')
    .getComponents()
    .findLast((c) => c.name === 'p2p')?.value
  if (relayId === undefined) return
  const relay = peerIdFromString(relayId)
  const open = () =>
    host.getConnections(relay).filter((c) => c.status === 'open' && connectionPath(c) === 'direct')
  if (open().length === 0) return
  try {
    await host.services.ping.ping(relay, { signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    log(`relay ${relayId} does not answer either; dropping the connection to it`)
    for (const c of open()) c.abort(err as Error)
  }
}
