/**
 * One libp2p host factory for every fleetmesh role.
 *
 * Coordinator, relay, agent and admin CLI all run the same stack (TCP + Noise +
 * Yamux, QUIC, identify, ping, a private kad-dht, circuit relay v2); the role only
 * decides listen defaults, DHT mode, whether this host serves as a relay and
 * how many connections it is sized for.
 *
 * @example
 *
 * ```ts
 * const host = await createHost({
 *   role: 'agent',
 *   privateKey: await generateKeyPair('Ed25519'),
 *   bootstrap: ['/dns4/coord.example.net/tcp/4001/p2p/12D3Koo…'],
 * })
 * // …
 * await stopHost(host)
 * ```
 */

import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import type { CircuitRelayServerInit, CircuitRelayService } from '@libp2p/circuit-relay-v2'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import type { Identify } from '@libp2p/identify'
import { identify } from '@libp2p/identify'
import type { AbortOptions, Connection, Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import type { Ping } from '@libp2p/ping'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { Libp2pOptions } from 'libp2p'
import { createLibp2p } from 'libp2p'
import type { ConnectionPath } from '../protocol/index.ts'
import { ConnectionGuard } from './connection-guard.ts'
import { linearConnectionList } from './connection-list.ts'
import { type DialScope, scopedGater } from './dial-scope.ts'
import { keptSigningKey } from './host-key.ts'
import { ROLE_PROFILES } from './host-profiles.ts'
import { libp2pLogger } from './libp2p-logger.ts'
import { fleetNoise } from './noise.ts'
import { quicDialing, withQuic } from './transports.ts'
import { deferYamuxWindowUpdates } from './yamux-window.ts'

export type HostRole = 'coordinator' | 'relay' | 'agent' | 'admin'

/** The fleetmesh DHT protocol; a private id keeps fleet hosts out of the public IPFS DHT and vice versa */
export const FLEETMESH_DHT_PROTOCOL = '/fleetmesh/kad/1.0.0'

export { DEFAULT_PORT } from './host-profiles.ts'

/**
 * Node timers (and so AbortSignal.timeout, which the relay uses to enforce
 * durations) fire after 1 ms when given more than 2^31-1 ms; a longer limit
 * would kill every relayed connection at once instead of never.
 */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Yamux grows a stream's receive window up to 16 MiB by default, but a
 * paused stream (a FramedStream whose reader is busy) resets itself once its
 * read buffer passes 4 MiB. A fast sender could fill the whole window while
 * the reader is busy and get the stream reset. Capping the window at the
 * read-buffer limit makes a paused stream hold at most what it may buffer.
 */
const YAMUX_STREAM_WINDOW_BYTES = 4 * 1024 * 1024

/** Operator-set limits for the circuit relay v2 server run by coordinator and relay hosts. */
export interface RelayLimits {
  /**
   * How many peers may hold a reservation (be reachable through this relay)
   * at once.
   *
   * @default 4096
   */
  maxReservations?: number

  /**
   * How long a reservation lasts before the client must refresh it, in ms.
   * libp2p clients refresh 5 minutes before expiry. At most 2^31-1.
   *
   * @default 7_200_000 (2 h, the libp2p default)
   */
  reservationTtlMs?: number

  /**
   * Bytes (both directions together) one relayed connection may carry before
   * the relay resets it.
   *
   * @default 256 MiB
   */
  dataLimitBytes?: number

  /**
   * How long one relayed connection may stay open, in ms, before the relay
   * resets it. At most 2^31-1 (about 24.8 days).
   *
   * @default 86_400_000 (24 h)
   */
  durationLimitMs?: number

  /**
   * Apply `dataLimitBytes` and `durationLimitMs` to relayed connections. When
   * false relayed connections are unlimited, and libp2p treats them like
   * direct ones (no `runOnLimitedConnection` opt-in needed).
   *
   * @default true
   */
  applyLimits?: boolean

  /**
   * Simultaneous relay HOP streams (reservations and connects in progress) per
   * connection.
   *
   * @default 64
   */
  maxInboundHopStreams?: number
}

// The libp2p defaults (128 KiB and 2 minutes per relayed connection) are sized
// for a relay that only bridges the few seconds a DCUtR hole punch takes. A
// fleetmesh agent behind CGNAT may never get a direct path, so its control
// stream to the coordinator lives on the relay for hours: status reports,
// desired-state pushes and heartbeats add up to far more than 128 KiB, and
// every reset forces a reconnect plus re-authentication. A day of control
// traffic (heartbeats, status reports, manifests) is in the tens of MiB, so
// 24 h / 256 MiB only bounds abuse and the cost of a stuck connection. Bulk
// artifacts come from the binary cache, not through the relay; and the relay
// buffers a relayed connection's data in memory without backpressure towards
// the sender, so the data limit is also the worst case per connection.
const RELAY_DEFAULTS = {
  maxReservations: 4096,
  reservationTtlMs: 2 * 60 * 60 * 1000,
  dataLimitBytes: 256 * 1024 * 1024,
  durationLimitMs: 24 * 60 * 60 * 1000,
  applyLimits: true,
  maxInboundHopStreams: 64,
} as const satisfies Required<RelayLimits>

export interface HostInit {
  /** What this host is; decides listen defaults, DHT mode, relay service and sizing */
  role: HostRole

  /** The host's Ed25519 key; its public key is the peer identity other peers pin */
  privateKey: PrivateKey

  /**
   * Multiaddrs to listen on; without a QUIC one, QUIC is added beside each TCP one (`withQuic`).
   *
   * Defaults: coordinator and relay `/ip4/0.0.0.0/tcp/4001` and `…/udp/4001/quic-v1`; agent and admin none:
   * they only dial out (relayed links ride their own connection, hole punching opens its own sockets).
   */
  listen?: string[]

  /** Multiaddrs to advertise instead of the listen addresses (e.g. a public IP in front of a NAT), as given */
  announce?: string[]

  /**
   * Peers to dial once at start-up, as multiaddrs ending in `/p2p/<peer id>`.
   * This is not a connection keeper: redialing after a disconnect is the
   * caller's job.
   */
  bootstrap?: string[]

  /** Limits for the relay server (coordinator and relay roles only) */
  relay?: RelayLimits

  /**
   * Relay multiaddrs (ending in `/p2p/<relay peer id>`) to make a reservation
   * on, so that this host can be reached as `<relay>/p2p-circuit/p2p/<us>`.
   *
   * `createHost` rejects if any reservation fails (relay unreachable, or it
   * refuses). libp2p does not renew a reservation on a relay it lost the
   * connection to; re-reserving is the caller's job.
   */
  reserveOn?: string[]

  /** Override the role's connection ceiling */
  maxConnections?: number

  /** Override how many connections one peer may hold with this host (inbound ones past it are refused) */
  maxConnectionsPerPeer?: number
  /** Override after how many ms an inbound connection without a stream is closed (0: never) */
  idleConnectionTimeoutMs?: number
  /**
   * New inbound connections accepted per second from one IP address; past it they are refused
   * until the second is over. A site whose devices share one NAT address reconnects through it.
   *
   * @default 500 for coordinator and relay, 5 for agent and admin
   */
  maxAcceptsPerIp?: number
  /** Refuses dials to private addresses that cannot be on this host's network (dial-scope.ts) */
  dialScope?: DialScope

  /**
   * Further libp2p services (factories `(components) => service`), e.g. the
   * hole-punching service. They appear on `host.services` under their keys.
   */
  extraServices?: Record<string, (components: never) => unknown>
}

export type FleetServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  /** Present on coordinator and relay hosts */
  relay?: CircuitRelayService
}

export type FleetHost = Libp2p<FleetServices>

function checkTimer(name: string, ms: number): number {
  if (!Number.isSafeInteger(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
    throw new RangeError(
      `relay.${name} must be a whole number of ms between 1 and ${MAX_TIMER_MS}, got ${ms}`,
    )
  }
  return ms
}

function checkCount(name: string, n: number, min: number): number {
  if (!Number.isSafeInteger(n) || n < min) {
    throw new RangeError(`${name} must be a whole number >= ${min}, got ${n}`)
  }
  return n
}

function checkPeerAddrs(name: string, addrs: string[]): string[] {
  for (const addr of addrs) {
    let ma: ReturnType<typeof multiaddr>
    try {
      ma = multiaddr(addr)
    } catch (err) {
      throw new TypeError(`${name} entry "${addr}" is not a valid multiaddr`, { cause: err })
    }
    if (ma.getComponents().at(-1)?.name !== 'p2p') {
      throw new TypeError(
        `${name} entry "${addr}" must end in /p2p/<peer id> so the peer's identity can be checked`,
      )
    }
  }
  return addrs
}

function relayServerInit(limits: RelayLimits = {}): CircuitRelayServerInit {
  const l = { ...RELAY_DEFAULTS, ...limits }
  return {
    maxInboundHopStreams: checkCount('relay.maxInboundHopStreams', l.maxInboundHopStreams, 1),
    reservations: {
      maxReservations: checkCount('relay.maxReservations', l.maxReservations, 0),
      reservationTtl: checkTimer('reservationTtlMs', l.reservationTtlMs),
      applyDefaultLimit: l.applyLimits,
      // the server enforces this with AbortSignal.timeout(), i.e. in ms, and
      // sends the same number in the Limit message, whose spec unit is seconds
      // (js-libp2p clients multiply it by 1000): clients overestimate how long
      // the connection lasts, the relay is authoritative
      defaultDurationLimit: checkTimer('durationLimitMs', l.durationLimitMs),
      defaultDataLimit: BigInt(checkCount('relay.dataLimitBytes', l.dataLimitBytes, 1)),
    },
  }
}

/**
 * Create and start a libp2p host for `init.role`.
 *
 * The returned host is listening (and holds its `reserveOn` reservations);
 * the caller owns it and must `stop()` it.
 */
export async function createHost(init: HostInit): Promise<FleetHost> {
  if (init.privateKey.type !== 'Ed25519') {
    throw new TypeError(`fleetmesh host identities are Ed25519 keys, got a ${init.privateKey.type} key`)
  }
  const profile = ROLE_PROFILES[init.role]
  if (init.relay !== undefined && !profile.relayServer) {
    throw new TypeError(
      `relay limits were given for a ${init.role} host, but only coordinator and relay hosts run a relay server`,
    )
  }
  deferYamuxWindowUpdates() // once per process: every host's yamux streams
  const bootstrapList = checkPeerAddrs('bootstrap', init.bootstrap ?? [])
  const reserveOn = checkPeerAddrs('reserveOn', init.reserveOn ?? [])
  const maxConnections = checkCount('maxConnections', init.maxConnections ?? profile.maxConnections, 1)
  const guard = new ConnectionGuard({
    maxPerPeer: init.maxConnectionsPerPeer ?? profile.maxConnectionsPerPeer,
    idleMs: init.idleConnectionTimeoutMs ?? profile.idleConnectionTimeoutMs,
    // strangers' records would pile up; the DHT's routing table and reservations are tagged
    ...(profile.dhtServer ? { forgetUntaggedPeers: true } : {}),
  })

  const quic = quicDialing() // QUIC first where a peer offers it, TCP where UDP does not get through
  const options: Libp2pOptions<FleetServices> = {
    privateKey: keptSigningKey(init.privateKey),
    logger: libp2pLogger(),
    addresses: {
      listen: withQuic(init.listen ?? profile.listen).concat(reserveOn.map((r) => `${r}/p2p-circuit`)),
      announce: init.announce ?? [],
    },
    transports: [tcp(), quic.transport, circuitRelayTransport()],
    connectionEncrypters: [fleetNoise()],
    streamMuxers: [
      yamux({
        streamOptions: {
          maxStreamWindowSize: YAMUX_STREAM_WINDOW_BYTES,
          maxReadBufferLength: YAMUX_STREAM_WINDOW_BYTES,
        },
      }),
    ],
    peerDiscovery: bootstrapList.length > 0 ? [bootstrap({ list: bootstrapList })] : [],
    connectionGater: scopedGater(guard.gater, init.dialScope),
    connectionManager: {
      addressSorter: quic.addressSorter,
      maxConnections,
      inboundConnectionThreshold: checkCount(
        'maxAcceptsPerIp',
        init.maxAcceptsPerIp ?? profile.inboundConnectionThreshold,
        1,
      ),
      maxIncomingPendingConnections: profile.maxIncomingPendingConnections,
    },
    connectionMonitor: {
      // every 20 s: well inside the idle timeouts of home NAT and CGNAT TCP
      // mappings; the coordinator runs none (host-profiles.ts), its agents' pings
      // keep their mappings, ~500 pings/s with 10k agents
      pingInterval: 20_000,
      enabled: profile.ping.monitor,
      abortConnectionOnPingFailure: profile.ping.abortOnFailure,
      pingTimeout: { minTimeout: profile.ping.minTimeoutMs },
    },
    services: {
      identify: identify(),
      // two at once on one connection: the connection monitor's and one of ours (a relay probe, doctor,
      // a bench); libp2p's default of one made the second fail with TooManyOutboundProtocolStreamsError
      ping: ping({ maxOutboundStreams: 2 }),
      dht: kadDHT({
        protocol: FLEETMESH_DHT_PROTOCOL,
        logPrefix: 'fleetmesh:dht',
        datastorePrefix: '/fleetmesh/dht',
        metricsPrefix: 'fleetmesh_dht',
        // fixed, not address-sniffed: coordinators and relays are the DHT's
        // backbone even on a LAN or behind a port forward, agents never serve
        clientMode: !profile.dhtServer,
        // fleets live on LANs and in private address space as often as on the
        // internet; the default mapper would drop every private address
        peerInfoMapper: passthroughMapper,
      }),
    },
  }

  if (profile.relayServer && options.services !== undefined) {
    options.services.relay = circuitRelayServer(relayServerInit(init.relay))
  }
  if (init.extraServices !== undefined && options.services !== undefined) {
    for (const [name, factory] of Object.entries(init.extraServices)) {
      if (name in options.services)
        throw new TypeError(`extra service "${name}" would replace a built-in service`)
      Object.assign(options.services, { [name]: factory })
    }
  }

  const host = await createLibp2p<FleetServices>(options)
  linearConnectionList(host)
  // a peer holding a reservation here is reachable only through its otherwise idle connection
  guard.attach(host, (peer) => host.services.relay?.reservations.has(peer) === true)
  return host
}

/** A service added through `extraServices`, which FleetServices does not type. */
export function extraService<T>(host: FleetHost, name: string): T | undefined {
  return (host.services as unknown as Record<string, T | undefined>)[name]
}

/** Whether a multiaddr goes through a circuit relay. */
export function isCircuitAddr(addr: Multiaddr): boolean {
  return addr.getComponents().some((c) => c.name === 'p2p-circuit')
}

/** How a connection reaches its peer: through a circuit relay or directly. */
export function connectionPath(conn: Pick<Connection, 'remoteAddr'>): ConnectionPath {
  return isCircuitAddr(conn.remoteAddr) ? 'relayed' : 'direct'
}

/** Whether a connection goes through a circuit relay. */
export function isRelayed(conn: Pick<Connection, 'remoteAddr'>): boolean {
  return connectionPath(conn) === 'relayed'
}

/**
 * An open connection to `peer`, a direct one if there is one. Relayed (limited)
 * connections count too: libp2p's own dial never reuses them and would open
 * another relayed connection after waiting out every unreachable address.
 */
export function openConnectionTo(
  host: Pick<FleetHost, 'getConnections'>,
  peer: PeerId,
): Connection | undefined {
  const open = host.getConnections(peer).filter((c) => c.status === 'open')
  return open.find((c) => connectionPath(c) === 'direct') ?? open[0]
}

/**
 * A stream for `protocol` to `peer`: on an open connection when there is one,
 * else by dialing. Streams may run over relayed connections (fleetmesh relays are
 * sized for control traffic; an agent behind CGNAT may have nothing else).
 */
export async function openStream(
  host: FleetHost,
  peer: PeerId,
  protocol: string,
  options: AbortOptions = {},
): Promise<Stream> {
  const streamOptions = { ...options, runOnLimitedConnection: true }
  const conn = openConnectionTo(host, peer)
  return conn !== undefined
    ? conn.newStream(protocol, streamOptions)
    : host.dialProtocol(peer, protocol, streamOptions)
}
