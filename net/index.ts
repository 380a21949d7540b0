/**
 * @packageDocumentation
 *
 * Networking: the libp2p host every role runs (TCP, Noise, Yamux, identify,
 * ping, kad-dht, circuit relay v2), how a connection reached us
 * ({@link connectionPath}: direct or relayed), relay reservations kept alive
 * by a NATed coordinator, the repairs a relay server needs, fleetmesh's own
 * TCP hole punching and NAT observation, the runtime snapshot each daemon
 * writes, `fleetmesh doctor`, which reads it, the command-line plumbing
 * the daemons share (options, the levelled event log, the Prometheus
 * endpoint and the metrics of net/'s own parts), and the one parser for
 * addresses people give ({@link parseAddress}: its errors name the flag or
 * file). Roles build on
 * this; this folder knows nothing of coordinators or agents beyond the role
 * name it is given.
 *
 * @example
 *
 * ```ts
 * import { connectionPath, createHost, holePunch, keepRuntimeFile, openConnectionTo, openStream, snapshotHost } from './net/index.ts'
 *
 * const host = await createHost({
 *   role: 'agent',
 *   privateKey,
 *   extraServices: { holePunch: holePunch({ observers: ['203.0.113.7:4002', '203.0.113.7:4003'] }) },
 * })
 * // on an open connection (direct, or relayed while no punch succeeded) or a new dial
 * const stream = await openStream(host, coordinatorPeerId, PROTOCOLS.control)
 * const conn = openConnectionTo(host, coordinatorPeerId)
 * console.log(conn && connectionPath(conn)) // 'direct' | 'relayed'
 *
 * // what `fleetmesh doctor --state <dir>` shows
 * const runtime = keepRuntimeFile(stateDir, () => snapshotHost(host, 'agent', {}))
 * // …
 * await runtime.stop()
 * await stopHost(host)
 * ```
 */

export { ACCEPT_LIMIT_OPTIONS, DEFAULT_MAX_ACCEPTS_PER_IP, maxAcceptsPerIp } from './accept-limit.ts'
export {
  describeReservation,
  HOST_OPTIONS,
  hostAddresses,
  RELAY_LIMIT_USAGE,
  relayLimits,
  reportAddresses,
  reservationLevel,
  untilSignal,
} from './daemon-cli.ts'
export {
  type DaemonLog,
  type DaemonLogInit,
  daemonLog,
  daemonLogFrom,
  LOG_LEVELS,
  LOG_OPTIONS,
  type LogAt,
  type LogFields,
  type LogLevel,
  type Say,
  updateStateLevel,
} from './daemon-log.ts'
export { DialScope, isPrivateIp, onLocalSubnet } from './dial-scope.ts'
export { LOCAL_DOCTOR_OPTIONS, localDoctor, localInterfaces } from './doctor.ts'
export { formatRemoteDoctor } from './doctor-format.ts'
export * from './holepunch/index.ts'
export {
  connectionPath,
  createHost,
  extraService,
  type FleetHost,
  type HostInit,
  type HostRole,
  isRelayed,
  openConnectionTo,
  openStream,
  type RelayLimits,
} from './host.ts'
export { HOST_STOP_HOLD_MS, stopHost } from './host-stop.ts'
export {
  closeMetricsOnFailure,
  type DaemonMetrics,
  METRICS_OPTIONS,
  METRICS_PREFIX,
  type MetricsAddress,
  type MetricsServer,
  MetricsServerError,
  metricsAddress,
  metricsRegistry,
  startMetrics,
  startMetricsServer,
} from './metrics-server.ts'
export { AddressError, type AddressUse, checkAddresses, parseAddress } from './multiaddr-arg.ts'
export { NAT_KEEPALIVE_MAX_DESCRIPTION, natKeepaliveMax } from './nat-options.ts'
export { holePunchMetrics, relayServerMetrics } from './net-metrics.ts'
export { dialThroughRelays, RelayDialError, relayRoutes } from './relay-dial.ts'
export { pruneSupersededConnections, RelayProbeError } from './relay-probe.ts'
export { repairReservationExpiry } from './reservation-expiry.ts'
export { ReservationKeeperError, type TransportManagerAccess, transportAccess } from './reservation-store.ts'
export { type ReservationEvent, ReservationKeeper, type ReservationKeeperInit } from './reservations.ts'
export {
  holePunchDetails,
  keepRuntimeFile,
  type RuntimeSnapshot,
  snapshotHost,
} from './runtime.ts'
export {
  addrTransport,
  connectionTransport,
  isQuicAddr,
  QUIC_HANDSHAKE_TIMEOUT_MS,
  QUIC_LISTEN_HELP,
  QuicHandshakeTimeoutError,
  type TransportName,
  withQuic,
} from './transports.ts'
