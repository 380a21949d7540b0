/**
 * The LAN stage of a punch between two peers behind the same public address:
 * dial the peer's LAN candidates (libp2p listen addresses) and, at the same
 * time, wait for the peer's dial to us. Both sides spend the same window here
 * whatever happens on their side, so that a public punch after it still starts
 * together. Only a direct connection whose Noise handshake proved `peer`'s id
 * counts: a connection's remote peer is the key Noise authenticated, and one
 * that another key answered is closed.
 *
 * The dials name no peer id (`/ip4/<a>/tcp/<p>`): libp2p would join a dial to a
 * peer id onto any dial to that peer already under way (the control link's
 * through the relay, say) and hand back its relayed connection instead.
 */
import type { Connection, Logger, PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { isRelayed } from '../host.ts'
import type { HolePunchConnectionManager, HolePunchNodeEvents } from './api.ts'
import { errorInfo } from './errors.ts'
import { type Endpoint, formatEndpoint } from './nat.ts'

export interface LanStageInit {
  connectionManager: HolePunchConnectionManager
  events: HolePunchNodeEvents
  log: Logger
  /** How long to try before the public punch */
  windowMs: number
  signal: AbortSignal
}

function directTo(peer: PeerId, connection: Connection): boolean {
  return connection.status === 'open' && !isRelayed(connection) && connection.remotePeer.equals(peer)
}

/** The LAN stage's result: the direct connection, or what became of each candidate */
export type LanOutcome = { connection: Connection } | { connection: undefined; tried: string[] }

/** A direct connection to `peer` over its LAN, or what each candidate did when none came up in the window */
export async function connectOverLan(
  peer: PeerId,
  candidates: readonly Endpoint[],
  init: LanStageInit,
): Promise<LanOutcome> {
  const { connectionManager, events, log } = init
  const existing = connectionManager.getConnections(peer).find((c) => directTo(peer, c))
  if (existing !== undefined) return { connection: existing }
  // `ip:port` → why it did not do: for the error that names them
  const outcomes = new Map(candidates.map((c) => [formatEndpoint(c), `no answer within ${init.windowMs} ms`]))
  const found = Promise.withResolvers<Connection | undefined>()
  const onOpen = (evt: CustomEvent<Connection>): void => {
    if (directTo(peer, evt.detail)) found.resolve(evt.detail)
  }
  const onEnd = (): void => found.resolve(undefined)
  const timer = setTimeout(onEnd, init.windowMs)
  events.addEventListener('connection:open', onOpen)
  init.signal.addEventListener('abort', onEnd, { once: true })
  // One controller per dial, aborted only while that dial is pending and the stage ended
  // empty-handed: libp2p ties a dialled connection to its dial's signal, so aborting that
  // signal later, or a timeout firing, would close the connection.
  const pending = new Set<AbortController>()
  for (const candidate of candidates) {
    const dial = new AbortController()
    pending.add(dial)
    const addr = multiaddr(`/ip4/${candidate.address}/tcp/${candidate.port}`)
    connectionManager.openConnection(addr, { signal: dial.signal }).then(
      (connection) => {
        pending.delete(dial)
        if (directTo(peer, connection)) {
          found.resolve(connection)
          return
        }
        outcomes.set(formatEndpoint(candidate), `answered by ${connection.remotePeer}, not the peer`)
        if (!connection.remotePeer.equals(peer))
          connection.abort(new Error('not the peer a LAN candidate named'))
      },
      // a candidate that does not answer is expected (another LAN, a firewall); the window decides
      (err: unknown) => {
        pending.delete(dial)
        outcomes.set(formatEndpoint(candidate), errorInfo(err).message)
        log('LAN candidate %s of %p did not connect: %e', formatEndpoint(candidate), peer, err)
      },
    )
  }
  const connection = await found.promise
  clearTimeout(timer)
  events.removeEventListener('connection:open', onOpen)
  init.signal.removeEventListener('abort', onEnd)
  // Nothing came up: stop the dials still pending. Not when something did: the one that
  // came up may be a dial whose promise has not settled yet (connection:open comes first).
  if (connection !== undefined) return { connection }
  for (const dial of pending) dial.abort(new Error('the LAN stage of the hole punch ended'))
  return { connection: undefined, tried: [...outcomes].map(([where, what]) => `${where}: ${what}`) }
}
