/**
 * `fleetmesh coordinator`: runs the coordinator daemon until SIGINT/SIGTERM,
 * printing events (JSON lines with --json) and, with --metrics, serving
 * Prometheus metrics (metrics.ts).
 */
import { resolve } from 'node:path'
import {
  type CommandSpec,
  configurable,
  duration,
  endpoints,
  int,
  list,
  optionLabel,
  type Parsed,
  parseConfiguredCommand,
  ports,
  required,
  str,
  UsageError,
} from '../lib/index.ts'
import {
  ACCEPT_LIMIT_OPTIONS,
  checkAddresses,
  closeMetricsOnFailure,
  daemonLogFrom,
  describeReservation,
  HOST_OPTIONS,
  hostAddresses,
  maxAcceptsPerIp,
  NAT_KEEPALIVE_MAX_DESCRIPTION,
  natKeepaliveMax,
  QUIC_LISTEN_HELP,
  RELAY_LIMIT_USAGE,
  relayLimits,
  reportAddresses,
  reservationLevel,
  startMetrics,
  untilSignal,
  updateStateLevel,
} from '../net/index.ts'
import { type CoordinatorOptions, startCoordinator } from './daemon.ts'
import { DEFAULT_GRACE_MS, DEFAULT_KEEP_MANIFESTS } from './nix-retention.ts'
import { parseStoreSpec, STORE_SPEC_USAGE, StoreSpecError } from './store-open.ts'

const USAGE =
  'fleetmesh coordinator --state <dir> [--listen <multiaddr>]... [--announce <multiaddr>]... [--bootstrap <multiaddr>]... ' +
  `[--reserve-on <relay multiaddr>]... [--reserve-keepalive 10s] [--observers ip:port,...] [--keepalive-max 30s] [--observer-ports p1,p2] ${RELAY_LIMIT_USAGE} ` +
  '[--idle-timeout 45s] [--max-accepts-per-ip 500] [--nix-keep-manifests 20] [--nix-cache-grace 24h] ' +
  '[--upload-idle-timeout 60s] [--upload-min-rate-kb 64] [--upload-quota-per-admin-mb 16384] [--upload-quota-total-mb 32768] [--upload-resume-grace 10m] ' +
  '[--metrics 127.0.0.1:9464 [--metrics-public]] [--json] [--log-level info]'

export const COORDINATOR_COMMAND: CommandSpec = configurable({
  name: 'coordinator',
  summary: 'Run the coordinator daemon until SIGINT/SIGTERM, printing events (JSON lines with --json).',
  usage: USAGE,
  options: {
    ...HOST_OPTIONS,
    state: {
      ...HOST_OPTIONS.state,
      description: 'the coordinator state directory "fleetmesh init" created',
      required: true,
    },
    store: {
      type: 'string',
      value: '<url>',
      description:
        'where the fleet is stored: postgres://user@host/db (a database coordinators can share), or sqlite:<path>',
      default: 'fleet.db in the state directory',
    },
    blobs: {
      type: 'string',
      value: '<dir>',
      description:
        'where uploaded archives and Nix NARs are kept; coordinators sharing a --store must share it (e.g. NFS)',
      default: 'blobs in the state directory',
    },
    listen: {
      ...HOST_OPTIONS.listen,
      description: QUIC_LISTEN_HELP.description,
      default: `the addresses given to init as --coordinator-addr (QUIC added as above), else ${QUIC_LISTEN_HELP.default}`,
    },
    'observer-ports': { ...HOST_OPTIONS['observer-ports'], default: 'none' },
    'reserve-on': {
      type: 'string',
      multiple: true,
      value: '<relay multiaddr>',
      description: 'relay to hold a reservation on, so agents reach a coordinator behind NAT',
    },
    'reserve-keepalive': {
      type: 'string',
      value: '<duration>',
      description: 'how often to check the relay reservations (at least 100ms)',
      default: '10s',
    },
    observers: {
      type: 'string',
      multiple: true,
      value: 'ip:port,...',
      description: "NAT observers (relays' observer ports) to learn how this host is seen from outside",
    },
    'keepalive-max': {
      type: 'string',
      value: '<duration>',
      description: NAT_KEEPALIVE_MAX_DESCRIPTION,
      default: '30s',
    },
    'idle-timeout': {
      type: 'string',
      value: '<duration>',
      description: 'how long an agent may stay silent before it counts as offline',
      default: '45s',
    },
    ...ACCEPT_LIMIT_OPTIONS,
    'nix-keep-manifests': {
      type: 'string',
      value: 'N',
      description: 'newest manifests whose Nix closures the cache keeps, besides every desired one',
      default: String(DEFAULT_KEEP_MANIFESTS),
    },
    'nix-cache-grace': {
      type: 'string',
      value: '<duration>',
      description: 'how long an unreferenced Nix cache entry survives before it is collected',
      default: '24h',
    },
    'upload-idle-timeout': {
      type: 'string',
      value: '<duration>',
      description: 'abort a blob upload (or a stalled download) that moves no data for this long',
      default: '60s',
    },
    'upload-min-rate-kb': {
      type: 'string',
      value: 'N',
      description: 'KiB/s a blob upload must average, after a 60 s allowance, or it is aborted',
      default: '64',
    },
    'upload-quota-per-admin-mb': {
      type: 'string',
      value: 'N',
      description: 'MiB of pending blob uploads one admin key may announce at once',
      default: '16384',
    },
    'upload-quota-total-mb': {
      type: 'string',
      value: 'N',
      description: 'MiB of pending blob uploads all admins together may announce at once',
      default: '32768',
    },
    'upload-resume-grace': {
      type: 'string',
      value: '<duration>',
      description:
        'how long an interrupted upload stays resumable before its partial file is deleted (0: at once)',
      default: '10m',
    },
  },
  examples: [
    'fleetmesh coordinator --state /var/lib/fleetmesh-coordinator --announce /ip4/203.0.113.7/tcp/4001',
    'fleetmesh coordinator --state /var/lib/fleetmesh-coordinator --config /etc/fleetmesh/coordinator.json',
  ],
})

/** --store, checked before anything starts: a value naming no store is a usage error. */
function storeOption(p: Parsed): { store?: string } {
  const store = str(p, 'store')
  if (store === undefined) return {}
  try {
    parseStoreSpec(store, '')
  } catch (err) {
    if (err instanceof StoreSpecError)
      throw new UsageError(`${optionLabel(p, 'store')} must be ${STORE_SPEC_USAGE}`)
    throw err
  }
  return { store }
}

export async function coordinatorCommand(argv: string[]): Promise<number> {
  const p: Parsed = await parseConfiguredCommand(argv, COORDINATOR_COMMAND)
  const log = daemonLogFrom(p)
  const say = log.say
  const reserveOn = checkAddresses(list(p, 'reserve-on'), optionLabel(p, 'reserve-on'), 'peer')
  const reserveKeepaliveMs = duration(p, 'reserve-keepalive', 10_000)
  if (reserveKeepaliveMs < 100)
    throw new UsageError(`${optionLabel(p, 'reserve-keepalive')} must be at least 100ms`)
  const options: CoordinatorOptions = {
    stateDir: resolve(required(p, 'state', COORDINATOR_COMMAND.usage)),
    ...storeOption(p),
    ...(str(p, 'blobs') ? { blobsDir: str(p, 'blobs') } : {}),
    ...hostAddresses(p),
    ...(reserveOn.length ? { reserveOn } : {}),
    observers: endpoints(p, 'observers'),
    natKeepaliveMaxMs: natKeepaliveMax(p),
    observerPorts: ports(p, 'observer-ports', []),
    reserveKeepaliveMs,
    onReservation: (e) => log.at(reservationLevel(e), 'reservation', { ...e }, describeReservation(e)),
    relay: relayLimits(p),
    idleTimeoutMs: duration(p, 'idle-timeout', 45_000),
    maxAcceptsPerIp: maxAcceptsPerIp(p),
    // The Nix cache keeps the closures of every desired manifest and of this many newest ones.
    nixKeepManifests: int(p, 'nix-keep-manifests', DEFAULT_KEEP_MANIFESTS, 0, 100_000),
    nixCacheGraceMs: duration(p, 'nix-cache-grace', DEFAULT_GRACE_MS),
    uploads: {
      idleTimeoutMs: duration(p, 'upload-idle-timeout', 60_000),
      minBytesPerSecond: int(p, 'upload-min-rate-kb', 64, 1, 1_000_000) * 1024,
      perAdminBytes: int(p, 'upload-quota-per-admin-mb', 16_384, 1, 2 ** 30) * 2 ** 20,
      totalBytes: int(p, 'upload-quota-total-mb', 32_768, 1, 2 ** 30) * 2 ** 20,
      resumeGraceMs: duration(p, 'upload-resume-grace', 600_000),
    },
    log: (msg) => say('log', { msg }, msg),
  }
  // after every other option is checked, before the daemon: a taken port fails before anything starts
  const metrics = await startMetrics(p, say)
  const running = await closeMetricsOnFailure(metrics, startCoordinator(options))
  const unmeasure = metrics
    ? await (await import('./metrics.ts')).coordinatorMetrics(metrics.registry, running)
    : () => {}
  const addrs = running.host.getMultiaddrs().map((a) => a.toString())
  say(
    'ready',
    {
      peerId: running.host.peerId.toString(),
      fleetId: running.fleetId,
      addrs,
      ...(running.listenNotes.length > 0 ? { listenNotes: running.listenNotes } : {}),
    },
    [
      `coordinator for fleet "${running.fleetId}" is up`,
      `  peer id  ${running.host.peerId}`,
      ...addrs.map((a) => `  listen   ${a}`),
      ...running.listenNotes.map((n) => `  note     ${n}`),
    ].join('\n'),
  )
  const unreport = reportAddresses(running.host, say)
  running.events.on((e) => {
    if ('remote' in e) return // another coordinator's agent: that coordinator prints it
    if (e.type === 'status')
      log.at(
        updateStateLevel(e.status.report.state),
        'status',
        { machine: e.machine, state: e.status.report.state, seq: e.status.seq },
        `${e.machine}: ${e.status.report.state}`,
      )
    else if (e.type === 'online')
      say(e.type, { machine: e.machine, path: e.path }, `${e.machine}: online (${e.path})`)
    else if (e.type === 'offline') say(e.type, { machine: e.machine }, `${e.machine}: offline`)
  })
  await untilSignal()
  say('stopping', {}, 'stopping')
  unreport()
  unmeasure()
  await running.stop()
  await metrics?.close()
  return 0
}
