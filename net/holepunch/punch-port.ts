/**
 * Choosing the punch port. It must never be a port anything listens on (a
 * listener on L makes every connect from L fail with EADDRINUSE), so it is
 * never the libp2p TCP listen port.
 */

import net from 'node:net'

/**
 * Above Linux's default ephemeral range (32768–60999), so a `listen(0)`
 * elsewhere in the process (libp2p's TCP listener) is unlikely to be handed
 * the same port later.
 */
const RANGE_START = 61_000
const RANGE_END = 65_535
const TRIES = 16

function canListen(port: number, host: string | undefined): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(undefined))
    server.listen({ port, host, exclusive: true }, () => {
      const info = server.address()
      const bound = typeof info === 'object' && info !== null ? info.port : undefined
      server.close(() => resolve(bound))
    })
  })
}

/** A currently free port, picked once per process and then kept */
export async function pickPunchPort(localAddress?: string): Promise<number> {
  for (let i = 0; i < TRIES; i++) {
    const candidate = RANGE_START + Math.floor(Math.random() * (RANGE_END - RANGE_START + 1))
    const port = await canListen(candidate, localAddress)
    if (port !== undefined) return port
  }
  const port = await canListen(0, localAddress)
  if (port === undefined) throw new Error('no free TCP port for hole punching')
  return port
}
