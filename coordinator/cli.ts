/**
 * `fleetmesh coordinator` and `fleetmesh relay`: run the coordinator daemon or
 * a relay daemon until SIGINT/SIGTERM, printing events (JSON lines with --json).
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
} from '../protocol/cli.ts'
import type { FleetHost, RelayLimits } from '../protocol/host.ts'
import { startCoordinator } from './daemon.ts'
import { DEFAULT_OBSERVER_PORTS, startRelay } from './relay.ts'
import type { ReservationEvent } from './reservations.ts'

const RELAY_LIMIT_USAGE =
  '[--relay-max-reservations N] [--relay-data-limit-mb N] [--relay-duration-limit 24h] [--relay-reservation-ttl 2h]'

const USAGE =
  'fleetmesh coordinator --state <dir> [--listen <multiaddr>]... [--announce <multiaddr>]... [--bootstrap <multiaddr>]... ' +
  `[--reserve-on <relay multiaddr>]... [--reserve-keepalive 10s] [--observers ip:port,...] [--observer-ports p1,p2] ${RELAY_LIMIT_USAGE} [--json]`

const RELAY_USAGE =
  'fleetmesh relay --state <dir> [--listen <multiaddr>]... [--announce <multiaddr>]... [--bootstrap <multiaddr>]... [--observer-ports 4002,4003|none] ' +
  `${RELAY_LIMIT_USAGE} [--json]`

const RELAY_LIMIT_OPTIONS = {
  'relay-max-reservations': { type: 'string' },
  'relay-data-limit-mb': { type: 'string' },
  'relay-duration-limit': { type: 'string' },
  'relay-reservation-ttl': { type: 'string' },
} as const

function relayLimits(p: Parsed): RelayLimits {
  return {
    maxReservations: int(p, 'relay-max-reservations', 4096, 0, 1_000_000),
    dataLimitBytes: int(p, 'relay-data-limit-mb', 256, 1, 1_000_000) * 1024 * 1024,
    durationLimitMs: duration(p, 'relay-duration-limit', 86_400_000),
    reservationTtlMs: duration(p, 'relay-reservation-ttl', 2 * 3_600_000),
  }
}

type Say = (event: string, fields: Record<string, unknown>, human: string) => void

function sayer(json: boolean): Say {
  return (event, fields, human) => {
    if (json) process.stdout.write(`${JSON.stringify({ event, at: new Date().toISOString(), ...fields })}\n`)
    else process.stdout.write(`${human}\n`)
  }
}

/**
 * Prints the host's addresses whenever they change (a relay reservation made
 * or lost, a new listener). Returns a function that stops it.
 */
function reportAddresses(host: FleetHost, say: Say): () => void {
  let last = host
    .getMultiaddrs()
    .map((a) => a.toString())
    .join(' ')
  const onUpdate = () => {
    const addrs = host.getMultiaddrs().map((a) => a.toString())
    if (addrs.join(' ') === last) return
    last = addrs.join(' ')
    say('addresses', { addrs }, ['reachable at', ...addrs.map((a) => `  ${a}`)].join('\n'))
  }
  host.addEventListener('self:peer:update', onUpdate)
  return () => host.removeEventListener('self:peer:update', onUpdate)
}

function untilSignal(): Promise<void> {
  return new Promise<void>((resolveStop) => {
    const stop = () => resolveStop()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

function describeReservation(e: ReservationEvent): string {
  switch (e.status) {
    case 'ok':
    case 'renewed':
      return `relay reservation ${e.status}${e.refresh ? ' (refresh)' : ''} on ${e.relay}, until ${new Date(e.expiresAt).toISOString()}`
    case 'lost':
      return `relay reservation lost on ${e.relay}: ${e.reason}`
    case 'failed':
      return `relay reservation on ${e.relay} failed: ${e.error}; retrying in ${e.retryInMs} ms`
  }
}

/** Options the coordinator and the relay share: state, addresses, observer ports, relay limits. */
const HOST_OPTIONS = {
  state: { type: 'string' },
  listen: { type: 'string', multiple: true },
  announce: { type: 'string', multiple: true },
  bootstrap: { type: 'string', multiple: true },
  'observer-ports': { type: 'string', multiple: true },
  ...RELAY_LIMIT_OPTIONS,
  json: { type: 'boolean' },
} as const

function hostAddresses(p: Parsed): { listen?: string[]; announce?: string[]; bootstrap?: string[] } {
  const listen = list(p, 'listen')
  const announce = list(p, 'announce')
  const bootstrap = list(p, 'bootstrap')
  return {
    ...(listen.length ? { listen } : {}),
    ...(announce.length ? { announce } : {}),
    ...(bootstrap.length ? { bootstrap } : {}),
  }
}

export async function coordinatorCommand(argv: string[]): Promise<number> {
  const p: Parsed = parseCommand(
    argv,
    {
      ...HOST_OPTIONS,
      'reserve-on': { type: 'string', multiple: true },
      'reserve-keepalive': { type: 'string' },
      observers: { type: 'string', multiple: true },
      'idle-timeout': { type: 'string' },
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
    log: (msg) => say('log', { msg }, msg),
  })
  const addrs = running.host.getMultiaddrs().map((a) => a.toString())
  say(
    'ready',
    { peerId: running.host.peerId.toString(), fleetId: running.fleetId, addrs },
    [
      `coordinator for fleet "${running.fleetId}" is up`,
      `  peer id  ${running.host.peerId}`,
      ...addrs.map((a) => `  listen   ${a}`),
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

export async function relayCommand(argv: string[]): Promise<number> {
  const p: Parsed = parseCommand(argv, HOST_OPTIONS, RELAY_USAGE)
  const say = sayer(flag(p, 'json'))
  const limits = relayLimits(p)
  const running = await startRelay({
    stateDir: resolve(required(p, 'state', RELAY_USAGE)),
    ...hostAddresses(p),
    relay: limits,
    observerPorts: ports(p, 'observer-ports', DEFAULT_OBSERVER_PORTS),
    log: (msg) => say('log', { msg }, msg),
  })
  const addrs = running.host.getMultiaddrs().map((a) => a.toString())
  say(
    'ready',
    { peerId: running.host.peerId.toString(), addrs, limits, observerPorts: running.observerPorts },
    [
      'relay is up',
      `  peer id  ${running.host.peerId}`,
      ...addrs.map((a) => `  listen   ${a}`),
      `  observer tcp ports ${running.observerPorts.join(', ') || '(none)'} (agents give <public ip>:<port> as --observers)`,
      `  limits   ${limits.maxReservations} reservations, ${Math.round((limits.dataLimitBytes ?? 0) / 1048576)} MiB and ${Math.round((limits.durationLimitMs ?? 0) / 1000)} s per relayed connection`,
    ].join('\n'),
  )
  const unreport = reportAddresses(running.host, say)
  await untilSignal()
  say('stopping', {}, 'stopping')
  unreport()
  await running.stop()
  return 0
}
