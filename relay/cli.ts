/**
 * `fleetmesh relay`: runs a public relay (circuit relay v2, the fleet DHT,
 * NAT observers; see daemon.ts) until SIGINT/SIGTERM, printing events as text
 * or, with --json, as JSON lines (`ready`, `addresses`, `log`, `stopping`), and,
 * with --metrics, serving Prometheus metrics (metrics.ts).
 * The options shared with the coordinator (addresses, relay limits, observer
 * ports) come from net/'s daemon command-line plumbing, so both daemons take
 * them the same way.
 *
 * @example
 *
 * ```sh
 * fleetmesh relay --state /var/lib/fleetmesh-relay --announce /ip4/203.0.113.7/tcp/4001 \
 *   --relay-max-reservations 10000 --json
 * ```
 */
import { resolve } from 'node:path'
import {
  type CommandSpec,
  configurable,
  type Parsed,
  parseConfiguredCommand,
  ports,
  required,
} from '../lib/index.ts'
import {
  ACCEPT_LIMIT_OPTIONS,
  closeMetricsOnFailure,
  daemonLogFrom,
  HOST_OPTIONS,
  hostAddresses,
  maxAcceptsPerIp,
  QUIC_LISTEN_HELP,
  RELAY_LIMIT_USAGE,
  relayLimits,
  reportAddresses,
  startMetrics,
  untilSignal,
} from '../net/index.ts'
import { DEFAULT_OBSERVER_PORTS, type RelayOptions, startRelay } from './daemon.ts'

const RELAY_USAGE =
  'fleetmesh relay --state <dir> [--listen <multiaddr>]... [--announce <multiaddr>]... [--bootstrap <multiaddr>]... [--observer-ports 4002,4003|none] [--max-accepts-per-ip 500] ' +
  `${RELAY_LIMIT_USAGE} [--metrics 127.0.0.1:9464 [--metrics-public]] [--json] [--log-level info]`

export const RELAY_COMMAND: CommandSpec = configurable({
  name: 'relay',
  summary:
    'Run a public relay (reachability for peers behind NAT, the fleet DHT, NAT observers) until SIGINT/SIGTERM.',
  usage: RELAY_USAGE,
  options: {
    ...HOST_OPTIONS,
    listen: { ...HOST_OPTIONS.listen, ...QUIC_LISTEN_HELP },
    'observer-ports': { ...HOST_OPTIONS['observer-ports'], default: DEFAULT_OBSERVER_PORTS.join(',') },
    ...ACCEPT_LIMIT_OPTIONS,
  },
  examples: [
    'fleetmesh relay --state /var/lib/fleetmesh-relay --announce /ip4/203.0.113.7/tcp/4001 --relay-max-reservations 10000',
    'FLEETMESH_STATE=/var/lib/fleetmesh-relay FLEETMESH_LISTEN=/ip4/0.0.0.0/tcp/4001 fleetmesh relay --json',
  ],
})

export async function relayCommand(argv: string[]): Promise<number> {
  const p: Parsed = await parseConfiguredCommand(argv, RELAY_COMMAND)
  const say = daemonLogFrom(p).say
  const limits = relayLimits(p)
  const options: RelayOptions = {
    stateDir: resolve(required(p, 'state', RELAY_COMMAND.usage)),
    ...hostAddresses(p),
    relay: limits,
    maxAcceptsPerIp: maxAcceptsPerIp(p),
    observerPorts: ports(p, 'observer-ports', DEFAULT_OBSERVER_PORTS),
    log: (msg) => say('log', { msg }, msg),
  }
  // after every other option is checked, before the daemon: a taken port fails before anything starts
  const metrics = await startMetrics(p, say)
  const running = await closeMetricsOnFailure(metrics, startRelay(options))
  if (metrics) await (await import('./metrics.ts')).relayMetrics(metrics.registry, running)
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
  await metrics?.close()
  return 0
}
