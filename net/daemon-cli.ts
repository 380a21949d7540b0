/**
 * Command-line plumbing the daemons that run a libp2p host share (the
 * coordinator and the relay): host address options, relay server limits,
 * address-change reports, and waiting for SIGINT/SIGTERM. The event log
 * (daemon-log.ts) and the metrics endpoint (metrics-server.ts) have their own
 * modules, which the agent uses too; their options are part of HOST_OPTIONS.
 */
import { duration, int, list, type Options, optionLabel, type Parsed } from '../lib/index.ts'
import { LOG_OPTIONS, type LogLevel, type Say } from './daemon-log.ts'
import type { FleetHost, RelayLimits } from './host.ts'
import { METRICS_OPTIONS } from './metrics-server.ts'
import { checkAddresses } from './multiaddr-arg.ts'
import type { ReservationEvent } from './reservations.ts'

export const RELAY_LIMIT_USAGE =
  '[--relay-max-reservations N] [--relay-data-limit-mb N] [--relay-duration-limit 24h] [--relay-reservation-ttl 2h]'
export const RELAY_LIMIT_OPTIONS = {
  'relay-max-reservations': {
    type: 'string',
    value: 'N',
    description: 'most relay reservations this host holds for peers behind NAT at once',
    default: '4096',
  },
  'relay-data-limit-mb': {
    type: 'string',
    value: 'N',
    description: 'MiB one relayed connection may carry before it is closed',
    default: '256',
  },
  'relay-duration-limit': {
    type: 'string',
    value: '<duration>',
    description: 'how long one relayed connection may last',
    default: '24h',
  },
  'relay-reservation-ttl': {
    type: 'string',
    value: '<duration>',
    description: 'how long a reservation lasts before the peer must renew it',
    default: '2h',
  },
} as const satisfies Options

export function relayLimits(p: Parsed): RelayLimits {
  return {
    maxReservations: int(p, 'relay-max-reservations', 4096, 0, 1_000_000),
    dataLimitBytes: int(p, 'relay-data-limit-mb', 256, 1, 1_000_000) * 1024 * 1024,
    durationLimitMs: duration(p, 'relay-duration-limit', 86_400_000),
    reservationTtlMs: duration(p, 'relay-reservation-ttl', 2 * 3_600_000),
  }
}

/**
 * Prints the host's addresses whenever they change (a relay reservation made
 * or lost, a new listener). Returns a function that stops it.
 */
export function reportAddresses(host: FleetHost, say: Say): () => void {
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

export function untilSignal(): Promise<void> {
  return new Promise<void>((resolveStop) => {
    const stop = () => resolveStop()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

/** A reservation lost or failing is a warning: agents behind the relay may not reach this host. */
export function reservationLevel(e: ReservationEvent): LogLevel {
  return e.status === 'lost' || e.status === 'failed' ? 'warn' : 'info'
}

export function describeReservation(e: ReservationEvent): string {
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
export const HOST_OPTIONS = {
  state: {
    type: 'string',
    value: '<dir>',
    description: "the daemon's state directory: keys, data, runtime.json",
    required: true,
  },
  listen: {
    type: 'string',
    multiple: true,
    value: '<multiaddr>',
    description: 'address to listen on',
    default: '/ip4/0.0.0.0/tcp/4001',
  },
  announce: {
    type: 'string',
    multiple: true,
    value: '<multiaddr>',
    description: 'public address to advertise to peers (e.g. behind port forwarding)',
  },
  bootstrap: {
    type: 'string',
    multiple: true,
    value: '<multiaddr>',
    description: 'relay to join for the fleet DHT and reachability',
  },
  'observer-ports': {
    type: 'string',
    multiple: true,
    value: 'p1,p2|none',
    description: 'TCP ports on which to tell peers the address they are seen from (NAT detection)',
  },
  ...RELAY_LIMIT_OPTIONS,
  ...LOG_OPTIONS,
  ...METRICS_OPTIONS,
} as const satisfies Options

export function hostAddresses(p: Parsed): { listen?: string[]; announce?: string[]; bootstrap?: string[] } {
  const listen = checkAddresses(list(p, 'listen'), optionLabel(p, 'listen'), 'listen')
  const announce = checkAddresses(list(p, 'announce'), optionLabel(p, 'announce'))
  const bootstrap = checkAddresses(list(p, 'bootstrap'), optionLabel(p, 'bootstrap'), 'peer')
  return {
    ...(listen.length ? { listen } : {}),
    ...(announce.length ? { announce } : {}),
    ...(bootstrap.length ? { bootstrap } : {}),
  }
}
