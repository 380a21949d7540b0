/**
 * `fleetmesh coordinator`: runs the coordinator daemon until SIGINT/SIGTERM,
 * printing events (JSON lines with --json).
 */
import { resolve } from 'node:path'
import {
  type CommandSpec,
  configurable,
  duration,
  endpoints,
  flag,
  int,
  list,
  optionLabel,
  type Parsed,
  parseConfiguredCommand,
  ports,
  required,
  UsageError,
} from '../lib/index.ts'
import {
  checkAddresses,
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
  '[--idle-timeout 45s] [--nix-keep-manifests 20] [--nix-cache-grace 24h] ' +
  '[--upload-idle-timeout 60s] [--upload-min-rate-kb 64] [--upload-quota-per-admin-mb 16384] [--upload-quota-total-mb 32768] [--upload-resume-grace 10m] [--json]'

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
    listen: {
      ...HOST_OPTIONS.listen,
      default: 'the addresses given to init as --coordinator-addr, else /ip4/0.0.0.0/tcp/4001',
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
    'idle-timeout': {
      type: 'string',
      value: '<duration>',
      description: 'how long an agent may stay silent before it counts as offline',
      default: '45s',
    },
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

export async function coordinatorCommand(argv: string[]): Promise<number> {
  const p: Parsed = await parseConfiguredCommand(argv, COORDINATOR_COMMAND)
  const say = sayer(flag(p, 'json'))
  const reserveOn = checkAddresses(list(p, 'reserve-on'), optionLabel(p, 'reserve-on'), 'peer')
  const reserveKeepaliveMs = duration(p, 'reserve-keepalive', 10_000)
  if (reserveKeepaliveMs < 100)
    throw new UsageError(`${optionLabel(p, 'reserve-keepalive')} must be at least 100ms`)
  const running = await startCoordinator({
    stateDir: resolve(required(p, 'state', COORDINATOR_COMMAND.usage)),
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
    uploads: {
      idleTimeoutMs: duration(p, 'upload-idle-timeout', 60_000),
      minBytesPerSecond: int(p, 'upload-min-rate-kb', 64, 1, 1_000_000) * 1024,
      perAdminBytes: int(p, 'upload-quota-per-admin-mb', 16_384, 1, 2 ** 30) * 2 ** 20,
      totalBytes: int(p, 'upload-quota-total-mb', 32_768, 1, 2 ** 30) * 2 ** 20,
      resumeGraceMs: duration(p, 'upload-resume-grace', 600_000),
    },
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
