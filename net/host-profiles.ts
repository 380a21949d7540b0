/**
 * What each role's libp2p host is sized for (host.ts): listen defaults, DHT and
 * relay service, connection limits, and how its ping monitor treats a slow ping.
 */
import { DEFAULT_MAX_ACCEPTS_PER_IP } from './accept-limit.ts'
import type { HostRole } from './host.ts'

/** Default TCP port for hosts other peers dial (coordinator, relay) */
export const DEFAULT_PORT = 4001

export interface RoleProfile {
  listen: string[]
  dhtServer: boolean
  relayServer: boolean
  maxConnections: number
  /** New inbound connections per second accepted from one IP */
  inboundConnectionThreshold: number
  /** Inbound connections allowed to be mid-handshake at once */
  maxIncomingPendingConnections: number
  /** Connections one peer may hold (an agent needs one or two), and when an idle inbound one goes (0: never) */
  maxConnectionsPerPeer: number
  idleConnectionTimeoutMs: number
  /**
   * libp2p's connection monitor: whether it pings every connection (every 20 s), whether a ping that
   * fails aborts the connection, and the least time a ping gets
   */
  ping: { monitor: boolean; abortOnFailure: boolean; minTimeoutMs: number }
}

/**
 * Coordinators and relays: thousands of agents, many behind one CGNAT
 * address, all redialing at once after a restart. The libp2p defaults (300
 * connections, 5 per second per IP, 10 pending handshakes) would turn that
 * into a reconnect storm of refusals; 500 a second from one address lets a
 * site of a thousand devices behind one NAT address back within seconds, while
 * the pending-handshake cap still bounds what a flood from one address costs.
 */
const PUBLIC_PROFILE: RoleProfile = {
  listen: [`/ip4/0.0.0.0/tcp/${DEFAULT_PORT}`, `/ip4/0.0.0.0/udp/${DEFAULT_PORT}/quic-v1`],
  dhtServer: true,
  relayServer: true,
  maxConnections: 10_000,
  inboundConnectionThreshold: DEFAULT_MAX_ACCEPTS_PER_IP,
  maxIncomingPendingConnections: 256,
  maxConnectionsPerPeer: 8,
  // admins and agents open a stream right after connecting; relay reservations are kept
  idleConnectionTimeoutMs: 60_000,
  ping: { monitor: true, abortOnFailure: true, minTimeoutMs: 5_000 },
}

/**
 * The coordinator runs no connection monitor: a slow ping must not end a
 * connection. A ping answered late during a burst of reports measured the
 * coordinator's own busy event loop, not the link, and aborting every connection
 * at once turned a burst into a reconnect storm. Each agent connection carries a
 * control stream that judges it (no frame for --idle-timeout resets the stream;
 * the connection guard then closes the connection without streams), the agents'
 * own pings keep NAT mappings warm, and relay connections have the reservation
 * keeper's probes. The monitor would also open a ping stream on every connection
 * in the same instant every 20 s: a stall of its own with thousands of agents.
 */
const COORDINATOR_PROFILE: RoleProfile = {
  ...PUBLIC_PROFILE,
  ping: { monitor: false, abortOnFailure: false, minTimeoutMs: 5_000 },
}

/**
 * Agents and admins: an agent talks to its coordinator(s), a relay, a handful
 * of DHT peers and whatever is mid hole-punch; an admin to one coordinator.
 */
const CLIENT_PROFILE: Omit<RoleProfile, 'listen'> = {
  dhtServer: false,
  relayServer: false,
  maxConnections: 64,
  inboundConnectionThreshold: 5,
  maxIncomingPendingConnections: 10,
  maxConnectionsPerPeer: 8,
  idleConnectionTimeoutMs: 0,
  ping: { monitor: true, abortOnFailure: true, minTimeoutMs: 5_000 },
}

export const ROLE_PROFILES: Record<HostRole, RoleProfile> = {
  coordinator: COORDINATOR_PROFILE,
  relay: PUBLIC_PROFILE,
  // A ping gets longer than the control link's own dead-after window (25 s), so on the
  // coordinator's connection the link, which sees every frame, decides; other connections
  // (relay, DHT) are still dropped by a failed ping.
  agent: {
    ...CLIENT_PROFILE,
    listen: [],
    ping: { monitor: true, abortOnFailure: true, minTimeoutMs: 30_000 },
  },
  // dial only
  admin: { ...CLIENT_PROFILE, listen: [] },
}
