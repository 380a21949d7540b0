/**
 * The hole-punching service's contract: its options, the libp2p components it
 * needs, and what it reports (attempts, status, events). Kept apart from the
 * service so the pieces that fill these in (service.ts, attempts.ts) need not
 * import the folder's index.
 */

import type {
  AbortOptions,
  ComponentLogger,
  Connection,
  PeerId,
  StreamHandler,
  StreamHandlerOptions,
  Upgrader,
} from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { RefuseReason, SkipReason } from './errors.ts'
import type { KeepaliveStatus } from './keepalive.ts'
import type { Endpoint, NatKind } from './nat.ts'
import type { NatObservation } from './observer-client.ts'

export interface HolePunchInit {
  /**
   * When false the service neither observes nor punches, and declines peers'
   * requests (they keep the relay).
   *
   * @default true
   */
  enabled?: boolean

  /**
   * Attempt a punch whenever a relayed connection to a peer opens (on the side
   * with the lower peer id). When false, only {@link HolePunchService.punch}
   * punches; requests from peers are still answered.
   *
   * @default true
   */
  autoPunch?: boolean

  /**
   * Local TCP port all punches and observer connections use. Nothing may
   * listen on it, so it must not be the libp2p listen port.
   *
   * @default a free port in 61000–65535, picked at start and kept
   */
  punchPort?: number

  /** Local address to bind the punch port to; by default the kernel picks per route */
  localAddress?: string

  /**
   * Public observers as `ipv4:port`, e.g. a relay's two observer ports. Two
   * are needed to tell an endpoint-independent NAT from a symmetric one.
   *
   * @default [] (no observation: this host cannot offer an endpoint and never punches)
   */
  observers?: string[]

  /**
   * Per connect attempt in the punch loop; raised to 2 × the relayed RTT when
   * that is larger, capped at 950 ms so each attempt is a single SYN.
   *
   * @default 300
   */
  attemptTimeoutMs?: number

  /**
   * Give up punching after this long (then `HolePunchTimeoutError`, keep the relay).
   *
   * @default 5000
   */
  deadlineMs?: number

  /**
   * Per observer connect and answer.
   *
   * @default 3000
   */
  observeTimeoutMs?: number

  /**
   * The longest interval at which the kept observer connection is asked again:
   * keeps the NAT mapping alive and notices a changed mapping. The interval
   * starts here and halves when the NAT is found to forget the mapping sooner
   * (keepalive.ts). Keep it below the observers' idle timeout (120 s by default).
   *
   * @default 30000
   */
  reprobeIntervalMs?: number

  /**
   * Waiting for each message of the coordination exchange.
   *
   * @default 10000
   */
  exchangeTimeoutMs?: number

  /**
   * The libp2p upgrade (multistream-select, Noise, Yamux) of a punched socket.
   *
   * @default 10000
   */
  upgradeTimeoutMs?: number

  /**
   * Close relayed connections to a peer once a direct one is up. Streams open
   * on them end; new streams pick the direct connection anyway.
   *
   * @default true
   */
  closeRelayed?: boolean

  /**
   * Wait after a failed automatic attempt before the next one to that peer;
   * doubles on each further failure up to `maxBackoffMs`, resets on success.
   *
   * @default 60000
   */
  backoffMs?: number

  /** @default 3600000 */
  maxBackoffMs?: number

  /**
   * Which peers to punch with, asked for each relayed peer before an automatic
   * attempt and when a peer asks; the others are neither punched nor answered
   * (a refusal). The role decides: an agent punches only with its coordinator,
   * a coordinator with its enrolled machines. A rejection counts as false.
   *
   * @default every peer
   */
  shouldPunch?: (peer: PeerId) => boolean | Promise<boolean>

  /**
   * Told the private addresses a peer behind our own public address offered,
   * just before the LAN stage dials them: a host whose dial scope refuses
   * private addresses off its own subnets lets these through (LAN discovery
   * says they are on this site, perhaps on another subnet of it).
   */
  allowLanDials?: (addresses: readonly string[]) => void
}

/** The registrar methods the service uses (libp2p's Registrar satisfies it) */
export interface HolePunchRegistrar {
  handle(protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>
  unhandle(protocol: string): Promise<void>
}

/** The connection manager methods the service uses */
export interface HolePunchConnectionManager {
  getConnections(peerId?: PeerId): Connection[]
  /** A multiaddr (with `/p2p/<id>`) for the LAN candidates of a peer behind our own NAT */
  openConnection(peer: PeerId | Multiaddr, options?: AbortOptions): Promise<Connection>
}

/** The transport manager method the service uses: this host's listen addresses, for LAN candidates */
export interface HolePunchTransportManager {
  getAddrs(): Multiaddr[]
}

/** The node events the service listens to */
export interface HolePunchNodeEvents {
  addEventListener(type: 'connection:open', listener: (evt: CustomEvent<Connection>) => void): void
  removeEventListener(type: 'connection:open', listener: (evt: CustomEvent<Connection>) => void): void
}

export interface HolePunchComponents {
  peerId: PeerId
  logger: ComponentLogger
  /** Upgrades punched sockets to libp2p connections */
  upgrader: Upgrader
  registrar: HolePunchRegistrar
  connectionManager: HolePunchConnectionManager
  events: HolePunchNodeEvents
  /** Without it this host offers no LAN candidates */
  transportManager?: HolePunchTransportManager
}

export interface PunchOptions extends AbortOptions {
  /** Punch even if a NAT is symmetric (it will fail; for diagnosis and benchmarks) */
  force?: boolean
}

/** The outcome of one attempt, on one side */
export interface PunchAttempt {
  /** The remote peer id */
  peer: string
  ok: boolean
  /** From the start of the attempt (or of the peer's request) to the upgraded connection, or to the failure */
  ms: number
  /** Our side of the coordination exchange */
  role: 'initiator' | 'responder'
  /** `auto`: a relayed connection opened; `manual`: punch() was called; `remote`: the peer asked */
  trigger: 'auto' | 'manual' | 'remote'
  /** When it ended, ms since the epoch */
  at: number
  /** The peer's NAT kind as it reported it */
  remoteNat?: NatKind
  /** The endpoint punched to, `ip:port` */
  target?: string
  /** connect() calls the punch loop made */
  synAttempts?: number
  /** Punch loop duration */
  connectMs?: number
  /** libp2p upgrade duration */
  upgradeMs?: number
  /** The direct connection's remote address, on success */
  remoteAddr?: string
  /** It came over the LAN (both peers behind one public address), not through a punch */
  lan?: boolean
  /** Why no punch was tried (ours or the peer's decision) */
  skipped?: SkipReason | RefuseReason
  error?: { name: string; message: string }
}

/** The last attempt with a peer, plus counts */
export interface PeerPunchStatus extends PunchAttempt {
  successes: number
  failures: number
  skips: number
  /** No automatic attempt to this peer before then (ms since the epoch) */
  backoffUntil?: number
}

export interface HolePunchStatus {
  enabled: boolean
  punchPort: number
  /** Our external endpoint as the observers see it */
  observed: Endpoint | undefined
  natKind: NatKind
  /** The full last observation, with each observer's answer or error */
  observation: NatObservation | undefined
  /** The punch port's NAT keepalive: the interval in force and what it was learned from */
  keepalive: KeepaliveStatus | undefined
  /** Keyed by peer id */
  attempts: Record<string, PeerPunchStatus>
}

export interface HolePunchEvents {
  /** An attempt ended (either role), successfully or not */
  attempt: PunchAttempt
  /** The NAT kind or external endpoint changed */
  observation: NatObservation
}

export interface HolePunchService {
  /**
   * Get a direct connection to `peer`: an existing one, the one an attempt in
   * progress produces, or a new punch coordinated over a relayed connection
   * (dialled if there is none). Ignores the automatic attempts' backoff.
   *
   * @throws {HolePunchSkippedError} a NAT is symmetric (unless `force`), or no external endpoint is known
   * @throws {HolePunchRefusedError} the peer declined
   * @throws {HolePunchTimeoutError} no simultaneous open before the deadline
   * @throws {HolePunchUpgradeError} the socket connected but Noise/Yamux failed
   * @throws {NoRelayedConnectionError} no connection to coordinate over
   */
  punch(peer: PeerId, options?: PunchOptions): Promise<Connection>

  /**
   * An automatic attempt with `peer` over its open relayed connection, as when
   * that connection opened, for a peer that `shouldPunch` may only now accept
   * (a machine that enrolled over that connection). Policy and backoff apply.
   */
  reconsider(peer: PeerId): void

  /** Punch port, NAT kind, observed endpoint and per-peer results, JSON-serialisable */
  status(): HolePunchStatus

  /** Probe all observers again now (also done every `reprobeIntervalMs` when the mapping changed) */
  refreshObservation(): Promise<NatObservation | undefined>

  addEventListener<K extends keyof HolePunchEvents>(
    type: K,
    listener: (event: CustomEvent<HolePunchEvents[K]>) => void,
  ): void
  removeEventListener<K extends keyof HolePunchEvents>(
    type: K,
    listener: (event: CustomEvent<HolePunchEvents[K]>) => void,
  ): void
}
