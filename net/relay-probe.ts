/**
 * Is this connection still alive? A NAT that drops its mapping without a RST
 * leaves a connection that looks open until libp2p's connection monitor gives
 * up on it (tens of seconds). A ping on that very connection answers sooner,
 * and is how the reservation keeper watches its relay connections and how a
 * relay drops the dead connections a peer reconnected past.
 */
import type { Connection, PeerId } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { errorMessage, sleep } from '../lib/index.ts'
import { type FleetHost, isRelayed } from './host.ts'

/** The ping protocol every fleetmesh host serves (`@libp2p/ping`). */
const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const PING_BYTES = 32

/** A ping on a connection was not answered (in time, or correctly): the path is dead. */
export class RelayProbeError extends Error {
  override name = 'RelayProbeError'
}

/**
 * Round trip one ping on `conn` itself (not on whichever connection libp2p
 * would pick for the peer). Resolves with the RTT in ms; rejects with
 * {@link RelayProbeError} when no answer comes within `timeoutMs`.
 *
 * A ping already in flight on the connection (libp2p allows one outbound ping
 * stream per connection; the connection monitor uses it too) rejects with
 * `TooManyOutboundProtocolStreamsError`, which says nothing about the path:
 * callers should skip that round.
 */
export async function probeConnection(conn: Connection, timeoutMs: number): Promise<number> {
  const signal = AbortSignal.timeout(timeoutMs)
  const start = Date.now()
  const stream = await conn
    .newStream(PING_PROTOCOL, { signal, runOnLimitedConnection: true })
    .catch((err) => {
      if ((err as Error).name === 'TooManyOutboundProtocolStreamsError') throw err
      throw new RelayProbeError(`no ping answer on ${conn.remoteAddr} within ${timeoutMs} ms`, { cause: err })
    })
  const onAbort = () => stream.abort(new RelayProbeError(`no ping answer within ${timeoutMs} ms`))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const data = crypto.getRandomValues(new Uint8Array(PING_BYTES))
    stream.send(data)
    const received = new Uint8ArrayList()
    for await (const chunk of stream) {
      received.append(chunk)
      if (received.byteLength >= PING_BYTES) break
    }
    const echoed = received.byteLength >= PING_BYTES ? received.subarray(0, PING_BYTES) : undefined
    if (echoed === undefined || !echoed.every((b, i) => b === data[i]))
      throw new RelayProbeError(`ping on ${conn.remoteAddr} was not echoed`)
    return Date.now() - start
  } catch (err) {
    if (err instanceof RelayProbeError) throw err
    throw new RelayProbeError(`ping on ${conn.remoteAddr} failed: ${errorMessage(err)}`, { cause: err })
  } finally {
    signal.removeEventListener('abort', onAbort)
    await stream
      .close({ signal: AbortSignal.timeout(timeoutMs) })
      .catch(() => stream.abort(new Error('probe done')))
  }
}

/**
 * After a NAT drops its mapping, a peer reconnects from a new port while its
 * old connection still looks open here until the connection monitor gives up on
 * it (tens of seconds). libp2p's relay server forwards a relayed dial over the
 * *oldest* connection to the destination, so for that long every dial to a
 * host that just re-reserved fails. Whenever a peer opens a further direct
 * connection, probe its older ones and abort those that do not answer.
 *
 * Probing every older connection on every new one would cost a peer's n-th
 * connection n pings, quadratic in what a hostile peer chooses: instead each
 * peer gets at most one probe round per `probeTimeoutMs`, and connections
 * opening during or shortly after a round are covered by one more round.
 * With the host's per-peer connection cap a round probes a bounded number.
 *
 * Returns a function that removes the listener and stops pending rounds.
 */
export function pruneSupersededConnections(
  host: FleetHost,
  options: {
    probeTimeoutMs?: number
    log?: (msg: string) => void
    /** After each probe round, with the number of connections it probed. */
    onRound?: (probed: number) => void
  } = {},
): () => void {
  const timeoutMs = options.probeTimeoutMs ?? 3_000
  const stopped = new AbortController()
  /** Peers with a round running or just finished; `again` when a connection opened since it started. */
  const rounds = new Map<string, { again: boolean }>()

  const probeOlder = async (peer: PeerId): Promise<void> => {
    const direct = host
      .getConnections(peer)
      .filter((c) => c.status === 'open' && !isRelayed(c))
      .sort((a, b) => a.timeline.open - b.timeline.open)
    const older = direct.slice(0, -1)
    await Promise.all(
      older.map((c) =>
        probeConnection(c, timeoutMs).catch((err: unknown) => {
          if (!(err instanceof RelayProbeError)) return
          options.log?.(`dropping a dead connection to ${c.remotePeer} (${c.remoteAddr}) it reconnected past`)
          c.abort(err)
        }),
      ),
    )
    options.onRound?.(older.length)
  }

  const run = async (key: string, peer: PeerId, state: { again: boolean }): Promise<void> => {
    try {
      do {
        state.again = false
        const started = Date.now()
        await probeOlder(peer)
        await sleep(Math.max(0, timeoutMs - (Date.now() - started)), stopped.signal)
      } while (state.again)
    } catch {
      // stopped
    } finally {
      rounds.delete(key)
    }
  }

  const onOpen = (evt: CustomEvent<Connection>) => {
    const fresh = evt.detail
    if (isRelayed(fresh)) return
    const key = fresh.remotePeer.toString()
    const running = rounds.get(key)
    if (running !== undefined) {
      running.again = true
      return
    }
    const state = { again: false }
    rounds.set(key, state)
    void run(key, fresh.remotePeer, state)
  }
  host.addEventListener('connection:open', onOpen)
  return () => {
    host.removeEventListener('connection:open', onOpen)
    stopped.abort(new Error('pruning stopped'))
  }
}
