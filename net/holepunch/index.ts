/**
 * @packageDocumentation
 *
 * TCP hole punching for fleetmesh, as a libp2p service.
 *
 * js-libp2p's DCUtR cannot punch TCP holes in Node (no SO_REUSEPORT, so
 * `@libp2p/tcp` dials from fresh ports). This service punches from its own
 * fixed port instead, by TCP simultaneous open, and hands the socket to the
 * node's upgrader (docs/hole-punching-study.md has the study behind it):
 *
 * 1. **Observe.** From the punch port it connects to public observers
 *    ({@link startObserver}, run by relays and public coordinators on two
 *    ports) to learn its external endpoint and NAT kind, and keeps one of
 *    those connections open as the NAT mapping's keepalive.
 * 2. **Coordinate.** When a relayed connection to a peer opens, the side with
 *    the lower peer id runs `/fleetmesh/holepunch/1` over it: both exchange
 *    observed endpoints and NAT kinds; if either NAT is symmetric they stop
 *    there and keep the relay.
 * 3. **Punch.** Both connect from their punch ports to the other's observed
 *    endpoint until a simultaneous open succeeds or the deadline passes. Two
 *    peers behind the same public address first try the LAN: each offer also
 *    lists the sender's private TCP listen addresses (candidates.ts, lan.ts).
 * 4. **Upgrade.** The socket becomes a Noise + Yamux libp2p connection (the
 *    lower peer id is the initiator on both sides), the connection manager
 *    tracks it, and the relayed connection is closed.
 *
 * Failed automatic attempts back off per peer (`backoffMs`, doubling up to
 * `maxBackoffMs`). {@link HolePunchService.punch} punches on demand;
 * {@link HolePunchService.status} reports the punch port, NAT kind, observed
 * endpoint and per-peer results (for `fleetmesh doctor`).
 *
 * The punch port must never be listened on (nor be the libp2p listen port),
 * and a fleet ConnectionGater must implement the *outbound* hooks to cover
 * punched connections: both sides upgrade them with `upgradeOutbound`.
 *
 * @example
 * ```ts
 * // on the relay (public): libp2p relay + observer on two ports
 * const relay = await createHost({ role: 'relay', privateKey })
 * const observer = await startObserver({ host: '0.0.0.0', ports: [4011, 4012] })
 *
 * // on an agent behind NAT
 * const agent = await createHost({
 *   role: 'agent',
 *   privateKey,
 *   reserveOn: ['/ip4/203.0.113.7/tcp/4001/p2p/12D3Koo…'],
 *   extraServices: {
 *     holePunch: holePunch({ observers: ['203.0.113.7:4011', '203.0.113.7:4012'] }),
 *   },
 * })
 * const punching = extraService<HolePunchService>(agent, 'holePunch')
 * punching?.status() // { punchPort: 61234, natKind: 'endpoint-independent', … }
 * ```
 */

import type { HolePunchComponents, HolePunchInit, HolePunchService } from './api.ts'
import { HolePunch } from './service.ts'

/** The service factory, for `createHost({ extraServices: { holePunch: holePunch(init) } })` */
export function holePunch(init: HolePunchInit = {}): (components: HolePunchComponents) => HolePunchService {
  return (components) => new HolePunch(components, init)
}

export type {
  HolePunchComponents,
  HolePunchConnectionManager,
  HolePunchEvents,
  HolePunchInit,
  HolePunchNodeEvents,
  HolePunchRegistrar,
  HolePunchService,
  HolePunchStatus,
  PeerPunchStatus,
  PunchAttempt,
  PunchOptions,
} from './api.ts'
export {
  HolePunchRefusedError,
  HolePunchSkippedError,
  HolePunchTimeoutError,
  HolePunchUpgradeError,
  NoRelayedConnectionError,
  ObserverResponseError,
  ObserverUnreachableError,
  PunchPortUnusableError,
  type RefuseReason,
  SameNatUnreachableError,
  type SkipReason,
} from './errors.ts'
export type { KeepaliveStatus } from './keepalive.ts'
export { HOLEPUNCH_PROTOCOL } from './messages.ts'
export { classifyNat, type Endpoint, type NatKind, parseEndpoint } from './nat.ts'
export type { NatObservation, ObserverResult } from './observer-client.ts'
export { type Observer, type ObserverInit, startObserver } from './observer-server.ts'
export { socketToMultiaddrConnection } from './socket-conn.ts'
