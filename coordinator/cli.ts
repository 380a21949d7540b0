/**
 * `fleetmesh coordinator`: runs the coordinator daemon until SIGINT/SIGTERM,
 * printing events (JSON lines with --json).
 */
import { resolve } from 'node:path'
import {
  duration,
  endpoints,
  flag,
  int,
  list,
  type Parsed,
  parseCommand,
  ports,
  required,
  UsageError,
} from '../lib/index.ts'
import {
  describeReservation,
  HOST_OPTIONS,
  hostAddresses,
  RELAY_LIMIT_USAGE,
  relayLimits,
  reportAddresses,
  sayer,
  untilSignal,
} from '../net/index.ts'
import { startCoordinator } from './daemon.ts'
import { DEFAULT_GRACE_MS, DEFAULT_KEEP_MANIFESTS } from './nix-retention.ts'

const USAGE =
  'fleetmesh coordinator --state <dir> [--listen <multiaddr>]... [--announce <multiaddr>]... [--bootstrap <multiaddr>]... ' +
  `[--reserve-on <relay multiaddr>]... [--reserve-keepalive 10s] [--observers ip:port,...] [--observer-ports p1,p2] ${RELAY_LIMIT_USAGE} ` +
  '[--nix-keep-manifests 20] [--nix-cache-grace 24h] [--json]'

export async function coordinatorCommand(argv: string[]): Promise<number> {
  const p: Parsed = parseCommand(
    argv,
    {
      ...HOST_OPTIONS,
      'reserve-on': { type: 'string', multiple: true },
      'reserve-keepalive': { type: 'string' },
      observers: { type: 'string', multiple: true },
      'idle-timeout': { type: 'string' },
      'nix-keep-manifests': { type: 'string' },
      'nix-cache-grace': { type: 'string' },
    },
    USAGE,
  )
  const say = sayer(flag(p, 'json'))
  const reserveOn = list(p, 'reserve-on')
  const reserveKeepaliveMs = duration(p, 'reserve-keepalive', 10_000)
  if (reserveKeepaliveMs < 100) throw new UsageError('--reserve-keepalive must be at least 100ms')
  const running = await startCoordinator({
    stateDir: resolve(required(p, 'state', USAGE)),
    ...hostAddresses(p),
    ...(reserveOn.length ? { reserveOn } : {}),
    observers: endpoints(p, 'observers'),
    observerPorts: ports(p, 'observer-ports', []),
    reserveKeepaliveMs,
    onReservation: (e) => say('reservation', { ...e }, describeReservation(e)),
    relay: relayLimits(p),
    idleTimeoutMs: duration(p, 'idle-timeout', 45_000),
    // The Nix cache keeps the closures of every desired manifest and of this many newest ones.
    nixKeepManifests: int(p, 'nix-keep-manifests', DEFAULT_KEEP_MANIFESTS, 0, 100_000),
    nixCacheGraceMs: duration(p, 'nix-cache-grace', DEFAULT_GRACE_MS),
    log: (msg) => say('log', { msg }, msg),
  })
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
    if (e.type === 'status')
      say(
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
  await running.stop()
  return 0
}
