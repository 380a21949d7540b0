/**
 * The observer ("whoami") server: a plain TCP endpoint, no libp2p, that tells
 * each client the source address and port it sees. Public hosts (relay,
 * public coordinator) run it on two ports so a client can compare the two
 * answers and classify its NAT.
 *
 * Wire format: on accept the server writes one line
 * `{"type":"observed","address":"203.0.113.10","port":40001}\n`. A client that
 * wants to keep its NAT mapping alive keeps the connection and sends a bare
 * newline now and then; each newline is answered with a fresh line, so the
 * keepalive doubles as a re-probe. Connections idle longer than
 * `idleTimeoutMs` are closed by the server.
 *
 * @example
 * ```ts
 * const observer = await startObserver({ host: '0.0.0.0', ports: [4011, 4012] })
 * // …
 * await observer.close()
 * ```
 */

import net from 'node:net'
import { plainAddress } from './nat.ts'

export interface ObserverInit {
  /** Address to listen on, e.g. `0.0.0.0` */
  host: string
  /** Two ports (or more) to listen on; 0 picks a free one */
  ports: readonly number[]
  /**
   * Close a connection after this long without a newline from the client.
   * Clients send one every `reprobeIntervalMs` (30 s by default).
   *
   * @default 120_000
   */
  idleTimeoutMs?: number
  /**
   * Connections per port at once. Each kept-alive client holds one, so size it
   * for the fleet: a few bytes of state each.
   *
   * @default 20_000
   */
  maxConnections?: number
}

export interface Observer {
  /** The ports actually listened on, in `init.ports` order */
  readonly ports: readonly number[]
  close(): Promise<void>
}

export const OBSERVED_LINE_TYPE = 'observed'

/** A client that stops reading must not make us buffer answers for it */
const MAX_PENDING_WRITE_BYTES = 4096

function serve(socket: net.Socket, idleTimeoutMs: number): void {
  socket.on('error', () => {
    // a client vanishing (RST, timeout) is routine for a public endpoint
  })
  socket.setNoDelay(true)
  socket.setTimeout(idleTimeoutMs, () => socket.destroy())
  const line = `${JSON.stringify({
    type: OBSERVED_LINE_TYPE,
    address: plainAddress(socket.remoteAddress),
    port: socket.remotePort ?? 0,
  })}\n`
  const answer = (): void => {
    if (socket.writableLength > MAX_PENDING_WRITE_BYTES) {
      socket.destroy()
      return
    }
    socket.write(line)
  }
  answer()
  // Only newlines matter; nothing is buffered, so a client sending garbage
  // costs nothing but the answers, one per chunk at most.
  socket.on('data', (chunk: Buffer) => {
    if (chunk.includes(10)) answer()
  })
}

/** Start an observer on every port of `init.ports`; resolves once all listen */
export async function startObserver(init: ObserverInit): Promise<Observer> {
  if (init.ports.length === 0)
    throw new TypeError('startObserver needs at least one port (two to classify NATs)')
  const idleTimeoutMs = init.idleTimeoutMs ?? 120_000
  const servers: net.Server[] = []
  // net.Server has no closeAllConnections(); kept-alive clients would hold
  // close() open until they went idle
  const sockets = new Set<net.Socket>()
  const closeAll = async (): Promise<void> => {
    const closed = Promise.all(servers.map(closeServer))
    for (const socket of sockets) socket.destroy()
    await closed
  }
  try {
    for (const port of init.ports) {
      const server = net.createServer((socket) => {
        sockets.add(socket)
        socket.once('close', () => sockets.delete(socket))
        serve(socket, idleTimeoutMs)
      })
      server.maxConnections = init.maxConnections ?? 20_000
      servers.push(server)
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({ host: init.host, port }, () => {
          server.off('error', reject)
          resolve()
        })
      })
    }
  } catch (err) {
    await closeAll()
    throw err
  }
  const ports = servers.map((s) => {
    const info = s.address()
    return typeof info === 'object' && info !== null ? info.port : 0
  })
  return {
    ports,
    close: closeAll,
  }
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve()
      return
    }
    server.close(() => resolve())
  })
}
