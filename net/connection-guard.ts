/**
 * Bounds what one remote peer can make a host hold: a cap on the connections a
 * peer may have open with it (libp2p 3 has none per peer, only a global ceiling
 * and a per-IP rate), closing inbound connections that carry no stream for a
 * while (libp2p never does: its own pings keep the socket busy), and, on hosts
 * anyone may connect to, forgetting a peer's record once it disconnects (libp2p
 * keeps every peer that ever connected for hours, and evicts only on reads:
 * a flood of fresh peer ids grew a coordinator's heap by ~3.4 KB per id).
 *
 * The cap is enforced twice: the connection gater refuses a peer at the cap as
 * soon as its handshake names it (before the muxer is set up), and because many
 * handshakes from one peer can pass the gater together, a connection that opens
 * past the cap anyway is aborted at once, newest first.
 */
import type { Connection, ConnectionGater, PeerId } from '@libp2p/interface'
import type { Libp2p } from 'libp2p'

/** Streams libp2p itself opens on every connection; they do not make a connection busy. */
const HOUSEKEEPING_PROTOCOLS: ReadonlySet<string> = new Set([
  '/ipfs/ping/1.0.0',
  '/ipfs/id/1.0.0',
  '/ipfs/id/push/1.0.0',
])

/** Sweeps for idle connections this many times per idle timeout (so one is closed within 1.25× of it). */
const SWEEPS_PER_TIMEOUT = 4

export interface ConnectionGuardInit {
  /** Open connections one peer may hold with this host; inbound ones past it are refused. */
  maxPerPeer: number
  /**
   * An inbound connection without a stream of its own (libp2p's pings and
   * identify do not count) is closed after this many ms; 0 keeps them.
   */
  idleMs: number
  /**
   * Delete a peer's peer-store record when its last connection closes, unless
   * it is tagged: a relay reservation, or the DHT's routing table (kad-dht tags
   * the peers in its bounded buckets). Having merely spoken a protocol does not
   * count: any stranger can open a DHT stream, and its record would stay.
   */
  forgetUntaggedPeers?: boolean
}

export class PeerLimitError extends Error {
  override name = 'PeerLimitError'
}

type GuardedHost = Pick<Libp2p, 'getConnections' | 'addEventListener' | 'removeEventListener' | 'peerStore'>

/** Peers whose idle connections stay, e.g. those holding a relay reservation on this host. */
export type KeepIdle = (peer: PeerId) => boolean

/**
 * The guard for one host. `gater` goes into the libp2p options before the
 * host exists; `attach(host)` once it does (until then everything is let in).
 * It detaches itself when the host stops.
 */
export class ConnectionGuard {
  readonly #init: ConnectionGuardInit
  #host: GuardedHost | undefined
  #keepIdle: KeepIdle = () => false
  /** Connection id → since when it has carried no stream of its own. */
  readonly #idleSince = new Map<string, number>()
  #timer: NodeJS.Timeout | undefined
  /** Connections refused or aborted for the per-peer cap since start. */
  refused = 0
  /** Idle connections closed since start. */
  closedIdle = 0

  constructor(init: ConnectionGuardInit) {
    if (!Number.isSafeInteger(init.maxPerPeer) || init.maxPerPeer < 1)
      throw new RangeError(`maxConnectionsPerPeer must be a whole number >= 1, got ${init.maxPerPeer}`)
    if (!Number.isSafeInteger(init.idleMs) || init.idleMs < 0)
      throw new RangeError(`idleConnectionTimeoutMs must be a whole number of ms >= 0, got ${init.idleMs}`)
    this.#init = init
  }

  readonly gater: ConnectionGater = {
    denyInboundEncryptedConnection: (peer) => {
      if (this.#openCount(peer) < this.#init.maxPerPeer) return false
      this.refused++
      return true
    },
  }

  attach(host: GuardedHost, keepIdle?: KeepIdle): void {
    this.#host = host
    if (keepIdle !== undefined) this.#keepIdle = keepIdle
    host.addEventListener('stop', () => this.detach(), { once: true })
    host.addEventListener('connection:open', this.#onOpen)
    host.addEventListener('connection:close', this.#onClose)
    if (this.#init.forgetUntaggedPeers === true) host.addEventListener('peer:disconnect', this.#onDisconnect)
    if (this.#init.idleMs > 0) {
      this.#timer = setInterval(() => this.sweep(), Math.max(10, this.#init.idleMs / SWEEPS_PER_TIMEOUT))
      this.#timer.unref()
    }
  }

  detach(): void {
    clearInterval(this.#timer)
    this.#host?.removeEventListener('connection:open', this.#onOpen)
    this.#host?.removeEventListener('connection:close', this.#onClose)
    this.#host?.removeEventListener('peer:disconnect', this.#onDisconnect)
    this.#idleSince.clear()
  }

  /** Closes the inbound connections idle for the timeout; `now` for tests. */
  sweep(now = Date.now()): void {
    const host = this.#host
    if (host === undefined) return
    for (const conn of host.getConnections()) {
      if (conn.direction !== 'inbound' || conn.status !== 'open' || this.#busy(conn)) {
        this.#idleSince.delete(conn.id)
        continue
      }
      const since = this.#idleSince.get(conn.id)
      if (since === undefined) this.#idleSince.set(conn.id, now)
      else if (now - since >= this.#init.idleMs) {
        this.#idleSince.delete(conn.id)
        this.closedIdle++
        conn.close().catch((err: unknown) => conn.abort(err as Error))
      }
    }
  }

  #busy(conn: Connection): boolean {
    if (this.#keepIdle(conn.remotePeer)) return true
    return conn.streams.some((s) => s.protocol !== undefined && !HOUSEKEEPING_PROTOCOLS.has(s.protocol))
  }

  #openCount(peer: PeerId): number {
    return this.#host?.getConnections(peer).filter((c) => c.status === 'open').length ?? 0
  }

  readonly #onOpen = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    // Outbound ones are this host's own choice; the libp2p connection manager has
    // already counted this one, so past the cap means more than maxPerPeer.
    if (conn.direction !== 'inbound' || this.#openCount(conn.remotePeer) <= this.#init.maxPerPeer) return
    this.refused++
    conn.abort(
      new PeerLimitError(
        `peer ${conn.remotePeer} already has ${this.#init.maxPerPeer} connections open with this host`,
      ),
    )
  }

  readonly #onClose = (evt: CustomEvent<Connection>): void => {
    this.#idleSince.delete(evt.detail.id)
  }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    void this.#forget(evt.detail).catch(() => {})
  }

  async #forget(peer: PeerId): Promise<void> {
    const host = this.#host
    if (host === undefined || this.#init.forgetUntaggedPeers !== true) return
    const record = await host.peerStore.get(peer)
    if (record.tags.size > 0) return
    // it may have reconnected while the record was read
    if (host.getConnections(peer).length === 0) await host.peerStore.delete(peer)
  }
}
