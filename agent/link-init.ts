/**
 * What the control link (link.ts) is given: the host, the coordinator, the
 * report queue and revocation list it syncs, and the callbacks it reports to.
 */
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { FleetHost } from '../net/index.ts'
import type { AgentDiagnosis, ConnectionPath, RevocationHead } from '../protocol/index.ts'
import type { PathUpgrade } from './link-path.ts'

export interface ReportQueue {
  pending(): Promise<{ seq: number; envelope: Uint8Array }[]>
  ack(seq: number): Promise<void>
  /**
   * On connect, given the highest report seq the coordinator stored: drops what
   * it has, or renumbers the queue above it when the agent's numbering went back
   * (Outbox.reconcile). Without it, the reports up to that seq are acknowledged.
   */
  reconcile?(stored: number): Promise<{ acked: number; renumbered: number }>
}

/** The agent's revocation list as the link needs it (agent/revocations.ts). */
export interface RevocationLink {
  head(): RevocationHead
  /** The coordinator's head (undefined: it keeps no signed list); resolves with entries to send it, in frames. */
  hello(theirs: RevocationHead | undefined): Promise<Uint8Array[][]>
  /** Entries from the coordinator; resolves once they are stored. */
  receive(entries: Uint8Array[]): Promise<void>
}

/** A coordinator the link may run to: its peer id (which the Noise handshake proves), where it listens. */
export interface LinkTarget {
  peer: PeerId
  addrs: Multiaddr[]
  /** Looks it up when its known addresses fail (see LinkInit.discover). */
  discover?: (signal: AbortSignal) => Promise<Multiaddr[]>
}

/** Which of several coordinators the link dials (agent/failover.ts): the current one, the next once it is lost. */
export interface CoordinatorChoice {
  current(): LinkTarget
  /** The session with the current one ended, or dialing it failed. */
  next(): void
}

export interface LinkInit {
  host: FleetHost
  coordinator: PeerId
  coordinatorAddrs: Multiaddr[]
  machine: string
  queue: ReportQueue
  onManifest: (envelope: Uint8Array) => void
  /** Ping interval. */
  keepaliveMs?: number
  /** No frame from the coordinator for this long means the path is dead. */
  deadAfterMs?: number
  backoffInitialMs?: number
  backoffMaxMs?: number
  /** Budget for dialing the coordinator, and again for dialing what `discover` found. */
  dialTimeoutMs?: number
  /**
   * Looks the coordinator up when dialing its known addresses fails; resolves
   * with the addresses found (already in the peer store) or rejects.
   */
  discover?: (signal: AbortSignal) => Promise<Multiaddr[]>
  /**
   * This agent's diagnosis of its network, for the coordinator's `diagnose`
   * requests; without it the hello does not offer the capability.
   */
  diagnose?: () => AgentDiagnosis
  revocations?: RevocationLink
  /**
   * The fleet's coordinators: the link dials the current one instead of
   * `coordinator`, and the next once the session is lost.
   */
  coordinators?: CoordinatorChoice
  /**
   * The fleet root's signed coordinator list from the coordinator (the hello then
   * names COORDINATOR_LIST_CAPABILITY); resolves once it is taken or refused.
   */
  onCoordinators?: (envelope: Uint8Array) => Promise<void>
  /** A signed tag record from the coordinator; resolves once it is taken or refused, before the next frame is read. */
  onTags?: (envelope: Uint8Array) => Promise<void>
  log?: (msg: string) => void
  onState?: (state: LinkState) => void
  /** The session moved from a relayed connection to a direct one (a `connected` state follows). */
  onPathUpgraded?: (move: PathUpgrade) => void
}

export type LinkState =
  | { connected: true; path: ConnectionPath; addr: string }
  | { connected: false; error?: string }

/** The coordinator the link dials now: the fleet's choice, or the one coordinator it was given. */
export function currentTarget(init: LinkInit): LinkTarget {
  const { coordinators, coordinator, coordinatorAddrs, discover } = init
  return (
    coordinators?.current() ?? {
      peer: coordinator,
      addrs: coordinatorAddrs,
      ...(discover ? { discover } : {}),
    }
  )
}
