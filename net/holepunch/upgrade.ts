/**
 * Turn a punched socket into a libp2p Connection with the node's own upgrader.
 *
 * Both peers "dialled" (each socket saw `connect`), so who connected decides
 * nothing: both call `upgradeOutbound`, and the peer id that sorts first is
 * the initiator on both sides. `initiator: false` makes the upgrader act as
 * multistream-select listener and Noise responder. upgradeOutbound (not
 * upgradeInbound) because it returns the Connection and skips the inbound
 * connection limits; it still announces `connection:open`, so the connection
 * manager tracks the connection and prefers it over the relayed one.
 */

import type { Socket } from 'node:net'
import type { Connection, Logger, PeerId, Upgrader } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { HolePunchUpgradeError } from './errors.ts'
import { plainAddress } from './nat.ts'
import { socketToMultiaddrConnection } from './socket-conn.ts'

/** The deterministic role: both sides compute the same answer from shared data */
export function isUpgradeInitiator(self: PeerId, remote: PeerId): boolean {
  return self.toString() < remote.toString()
}

export interface UpgradePunchedOptions {
  upgrader: Upgrader
  initiator: boolean
  signal: AbortSignal
  log: Logger
}

export async function upgradePunchedSocket(
  socket: Socket,
  remotePeer: PeerId,
  options: UpgradePunchedOptions,
): Promise<Connection> {
  // what @libp2p/tcp sets on the sockets it dials; without noDelay, Nagle and
  // delayed ACKs made the first ping ~80 ms instead of 4-11 ms in the lab
  socket.setNoDelay(true)
  socket.setKeepAlive(true)
  const where = `${plainAddress(socket.remoteAddress)}:${socket.remotePort}`
  if (socket.destroyed || socket.remoteAddress === undefined) {
    throw new HolePunchUpgradeError(
      `the punched connection to ${remotePeer} closed before its libp2p upgrade`,
    )
  }
  // /p2p/ makes Noise check that the remote static key is this peer's
  const remoteAddr = multiaddr(
    `/ip4/${plainAddress(socket.remoteAddress)}/tcp/${socket.remotePort}/p2p/${remotePeer}`,
  )
  const maConn = socketToMultiaddrConnection({
    socket,
    remoteAddr,
    direction: options.initiator ? 'outbound' : 'inbound',
    log: options.log.newScope('conn'),
  })
  try {
    return await options.upgrader.upgradeOutbound(maConn, {
      signal: options.signal,
      initiator: options.initiator,
    })
  } catch (err) {
    const cause = err instanceof Error ? err : new Error(String(err))
    maConn.abort(cause)
    throw new HolePunchUpgradeError(
      `the punched TCP connection to ${remotePeer} at ${where} connected but its libp2p upgrade ` +
        `(${options.initiator ? 'initiator' : 'responder'}) failed: ${cause.name}: ${cause.message}; keeping the relay`,
      { cause },
    )
  }
}
