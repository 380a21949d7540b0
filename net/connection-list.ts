/**
 * A repair of libp2p 3's list of all connections, for every host; see
 * {@link linearConnectionList}.
 */
import type { Connection, PeerId } from '@libp2p/interface'
import type { Libp2p } from 'libp2p'

/** The part of libp2p's connection manager the repair touches (`components` is not public API). */
interface ConnectionManagerLike {
  getConnections(peerId?: PeerId): Connection[]
  getConnectionsMap(): {
    values(): IterableIterator<Connection[]>
    get(peer: PeerId): Connection[] | undefined
  }
}

/**
 * libp2p 3's `ConnectionManager.getConnections()` without a peer builds its
 * list with one `Array.concat` per peer, each copying all it has so far:
 * quadratic in the number of peers. It runs for every connection that opens
 * (the connection pruner, the check of the inbound ceiling): in a reconnect
 * storm of 1,000 agents it was 7.7% of a coordinator's main thread. The repair
 * builds the same list, in the same order, in one pass (a plain loop: spreading
 * the lists and `flat()` took 50 µs for 1,000 peers here, the loop 18 µs); with
 * a peer it answers as before.
 */
export function linearConnectionList(host: Libp2p): void {
  const manager = (host as unknown as { components: { connectionManager: ConnectionManagerLike } }).components
    .connectionManager
  manager.getConnections = (peerId?: PeerId): Connection[] => {
    const map = manager.getConnectionsMap()
    if (peerId != null) return map.get(peerId) ?? []
    const all: Connection[] = []
    for (const list of map.values()) for (let i = 0; i < list.length; i++) all.push(list[i] as Connection)
    return all
  }
}
