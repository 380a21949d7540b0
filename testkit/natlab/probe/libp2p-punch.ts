// Hole punch, then hand the socket to libp2p: a prototype of the fleetmesh
// hole-punching service. Both sides meet at the rendezvous under their peer ids,
// punch by simultaneous open, and upgrade the socket with the node's own
// upgrader (multistream-select + Noise + Yamux). The peer id that sorts first
// is the initiator on both sides, so exactly one Noise initiator and one
// multistream dialer exist although both sockets "dialled". Then each pings
// the other over the new connection.
//
//   node libp2p-punch.ts --rendezvous 203.0.113.100:7100 --session up --local-port 45000
//   stdout: {"event":"peer","peerId":"12D3Koo…"} … {"event":"upgraded","ok":true,"role":"initiator",…}

import type { Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { ComponentLogger, Connection, Logger, PeerId, Upgrader } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { socketToMultiaddrConnection } from '../../../net/index.ts'
import { emit, readCommands } from './io.ts'
import { meet, simultaneousOpen } from './simopen.ts'

interface DirectComponents {
  upgrader: Upgrader
  peerId: PeerId
  logger: ComponentLogger
}

/** The service part: turn a punched socket into a libp2p Connection. */
class DirectSocketUpgrader {
  readonly #components: DirectComponents
  readonly #log: Logger

  constructor(components: DirectComponents) {
    this.#components = components
    this.#log = components.logger.forComponent('fleetmesh:direct')
  }

  /** Both sides think they dialled; the lower peer id takes the initiator role. */
  isInitiator(remotePeer: PeerId): boolean {
    return this.#components.peerId.toString() < remotePeer.toString()
  }

  async upgrade(socket: Socket, remotePeer: PeerId, signal: AbortSignal): Promise<Connection> {
    const initiator = this.isInitiator(remotePeer)
    // What @libp2p/tcp sets on the sockets it dials; without noDelay, Nagle and
    // delayed ACKs add ~40 ms to every small libp2p message.
    socket.setNoDelay(true)
    socket.setKeepAlive(true)
    // The /p2p/ suffix makes Noise check that the remote key is the expected peer.
    const remoteAddr = multiaddr(`/ip4/${socket.remoteAddress}/tcp/${socket.remotePort}/p2p/${remotePeer}`)
    const maConn = socketToMultiaddrConnection({
      socket,
      remoteAddr,
      direction: initiator ? 'outbound' : 'inbound',
      log: this.#log.newScope('conn'),
    })
    try {
      // upgradeOutbound, not upgradeInbound: it returns the Connection and skips
      // the inbound connection limits; `initiator: false` makes it act as the
      // multistream listener and Noise responder.
      return await this.#components.upgrader.upgradeOutbound(maConn, { signal, initiator })
    } catch (err) {
      maConn.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    }
  }
}

const { values } = parseArgs({
  options: {
    rendezvous: { type: 'string' },
    session: { type: 'string', default: 'upgrade' },
    'local-port': { type: 'string', default: '45000' },
  },
})
if (values.rendezvous === undefined) {
  process.stderr.write('usage: libp2p-punch.ts --rendezvous HOST:PORT [--session S] [--local-port L]\n')
  process.exit(2)
}
readCommands(() => {})
const [rvHost = '', rvPort = '0'] = values.rendezvous.split(':')
const rendezvous = { address: rvHost, port: Number(rvPort) }
const localPort = Number(values['local-port'])

const node = await createLibp2p({
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    ping: ping(),
    direct: (components: DirectComponents) => new DirectSocketUpgrader(components),
  },
})
const me = node.peerId.toString()
emit({ event: 'peer', peerId: me })

try {
  const { socket: rv, peer } = await meet(rendezvous, localPort, values.session, me)
  const remotePeer = peerIdFromString(peer.name)
  const started = Date.now()
  const punched = await simultaneousOpen(peer, {
    localPort,
    attemptTimeoutMs: 300,
    retryDelayMs: 25,
    deadlineMs: 3_000,
  })
  const connectMs = Date.now() - started
  const connection = await node.services.direct.upgrade(
    punched.socket,
    remotePeer,
    AbortSignal.timeout(5_000),
  )
  const upgradeMs = Date.now() - started - connectMs
  const rttMs = await node.services.ping.ping(remotePeer, { signal: AbortSignal.timeout(5_000) })
  // Both must have pinged before either stops its node: meet once more.
  const bye = await meet(rendezvous, 0, `${values.session}-bye`, me)
  bye.socket.destroy()
  rv.destroy()
  emit({
    event: 'upgraded',
    ok: true,
    role: node.services.direct.isInitiator(remotePeer) ? 'initiator' : 'responder',
    remotePeer: connection.remotePeer.toString(),
    direction: connection.direction,
    encryption: connection.encryption,
    multiplexer: connection.multiplexer,
    remoteAddr: connection.remoteAddr.toString(),
    connections: node.getConnections(remotePeer).length,
    attempts: punched.attempts,
    connectMs,
    upgradeMs,
    rttMs,
  })
} catch (err) {
  emit({
    event: 'upgraded',
    ok: false,
    error:
      err instanceof Error
        ? { name: err.name, message: err.message }
        : { name: 'Error', message: String(err) },
  })
} finally {
  await node.stop()
}
process.exit(0)
