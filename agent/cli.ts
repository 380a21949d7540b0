/** `fleetmesh agent`: runs the agent daemon until SIGINT/SIGTERM. */
import { resolve } from 'node:path'
import {
  type CommandSpec,
  configurable,
  duration,
  endpoints,
  int,
  list,
  optionLabel,
  parseConfiguredCommand,
  readTextArg,
  required,
  str,
  UsageError,
} from '../lib/index.ts'
import {
  checkAddresses,
  closeMetricsOnFailure,
  daemonLogFrom,
  LOG_OPTIONS,
  type LogLevel,
  METRICS_OPTIONS,
  NAT_KEEPALIVE_MAX_DESCRIPTION,
  natKeepaliveMax,
  startMetrics,
  updateStateLevel,
} from '../net/index.ts'
import { isTimeZone, systemTimeZone } from '../protocol/index.ts'
import { startAgent } from './daemon.ts'

/** Events that say something went wrong (a lost link, a refusal, a failure); the others are info. */
const WARNINGS = new Set(['warning', 'disconnected', 'discovery-failed', 'revocation-alarm', 'tags-refused'])
const levelOf = (event: string, fields: Record<string, unknown>): LogLevel =>
  WARNINGS.has(event) ? 'warn' : event === 'status' ? updateStateLevel(fields.state) : 'info'

const USAGE =
  'fleetmesh agent --state <dir> [--token <fmtok1…|@file>] [--coordinator-addr <multiaddr>]... [--bootstrap <relay multiaddr>]... [--observers ip:port,...] ' +
  '[--listen <multiaddr>]... [--standby on|off] ' +
  '[--keepalive 10s] [--keepalive-max 30s] [--pass-env NAME]... [--activator auto|profile|nixos] ' +
  '[--nix-profile /nix/var/nix/profiles/system] [--nix-keep-generations 5] [--timezone <IANA zone>] ' +
  '[--metrics 127.0.0.1:9464 [--metrics-public]] [--json] [--log-level info]'

export const AGENT_COMMAND: CommandSpec = configurable({
  name: 'agent',
  summary: 'Run the agent daemon on a device until SIGINT/SIGTERM; on first start it enrolls with --token.',
  usage: USAGE,
  options: {
    state: { type: 'string', value: '<dir>', description: "the agent's state directory", required: true },
    token: {
      type: 'string',
      value: '<fmtok1…|@file>',
      description: 'enrollment token from "fleetmesh enroll", or @file holding it (first start only)',
    },
    'coordinator-addr': {
      type: 'string',
      multiple: true,
      value: '<multiaddr>',
      description: 'coordinator address to dial instead of the ones in the token',
    },
    standby: {
      type: 'string',
      value: 'on|off',
      description:
        'hold a connection to the coordinator this agent would fail over to, so a failover needs no new handshake ' +
        '(fleets with several coordinators; off saves that connection and a frame every 20s)',
      default: 'on',
    },
    bootstrap: {
      type: 'string',
      multiple: true,
      value: '<relay multiaddr>',
      description: 'relay to join for the fleet DHT and to be reachable through',
    },
    observers: {
      type: 'string',
      multiple: true,
      value: 'ip:port,...',
      description: "NAT observers (relays' observer ports) to learn how this device is seen from outside",
    },
    listen: {
      type: 'string',
      multiple: true,
      value: '<multiaddr>',
      description:
        'address to accept libp2p connections on, only to reach this agent directly: nothing in a fleet dials agents (they dial the coordinator and relays; relayed links and hole punching need no listener)',
      default: 'none, no listening socket',
    },
    keepalive: {
      type: 'string',
      value: '<duration>',
      description: 'how often to ping the coordinator (at least 200ms)',
      default: '10s',
    },
    'keepalive-max': {
      type: 'string',
      value: '<duration>',
      description: NAT_KEEPALIVE_MAX_DESCRIPTION,
      default: '30s',
    },
    'pass-env': {
      type: 'string',
      multiple: true,
      value: 'NAME',
      description: "environment variable to pass to the payload's hooks",
    },
    activator: {
      type: 'string',
      value: 'auto|profile|nixos',
      description:
        'how generations are installed: nixos (system closures, local Nix), profile (archives under <state>/profile), auto: nixos when /etc/NIXOS exists',
      default: 'auto',
    },
    'nix-profile': {
      type: 'string',
      value: '<path>',
      description: 'the Nix profile the nixos activator points at each new system',
      default: '/nix/var/nix/profiles/system',
    },
    'nix-keep-generations': {
      type: 'string',
      value: 'N',
      description: 'profile generations the nixos activator keeps',
      default: '5',
    },
    timezone: {
      type: 'string',
      value: '<IANA zone>',
      description:
        "the device's time zone, in which maintenance windows (deploy --window) are read, e.g. Europe/Berlin",
      default: "the system's (TZ, /etc/localtime)",
    },
    ...METRICS_OPTIONS,
    ...LOG_OPTIONS,
  },
  examples: [
    'fleetmesh agent --state /var/lib/fleetmesh-agent --token @/run/fleetmesh-token',
    'fleetmesh agent --state /var/lib/fleetmesh-agent --config /etc/fleetmesh/agent.json',
  ],
})

export async function agentCommand(argv: string[]): Promise<number> {
  const p = await parseConfiguredCommand(argv, AGENT_COMMAND)
  const log = daemonLogFrom(p)
  const tokenArg = str(p, 'token')
  const hookEnv: Record<string, string> = {}
  for (const name of list(p, 'pass-env')) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      throw new UsageError(`${optionLabel(p, 'pass-env')}: "${name}" is not an environment variable name`)
    const value = process.env[name]
    if (value !== undefined) hookEnv[name] = value
  }
  const listen = checkAddresses(list(p, 'listen'), optionLabel(p, 'listen'), 'listen')
  const coordinatorAddrs = checkAddresses(list(p, 'coordinator-addr'), optionLabel(p, 'coordinator-addr'))
  const bootstrap = checkAddresses(list(p, 'bootstrap'), optionLabel(p, 'bootstrap'), 'peer')
  const keepaliveMs = duration(p, 'keepalive', 10_000)
  if (keepaliveMs < 200) throw new UsageError(`${optionLabel(p, 'keepalive')} must be at least 200ms`)
  const activator = str(p, 'activator') ?? 'auto'
  if (activator !== 'auto' && activator !== 'profile' && activator !== 'nixos')
    throw new UsageError(`${optionLabel(p, 'activator')} must be auto, profile or nixos, not "${activator}"`)
  const nixProfile = str(p, 'nix-profile')
  const nixKeepGenerations = int(p, 'nix-keep-generations', 5, 1, 1000)
  const timeZone = str(p, 'timezone') ?? systemTimeZone()
  if (!isTimeZone(timeZone))
    throw new UsageError(
      `${optionLabel(p, 'timezone')}: "${timeZone}" is not a time zone this system knows; ` +
        'give an IANA name such as UTC, Europe/Berlin or America/New_York',
    )
  const standby = str(p, 'standby') ?? 'on'
  if (standby !== 'on' && standby !== 'off')
    throw new UsageError(`${optionLabel(p, 'standby')} must be on or off, not "${standby}"`)
  const stateDir = resolve(required(p, 'state', AGENT_COMMAND.usage))
  const observers = endpoints(p, 'observers')
  // after every other option is checked, before the daemon: a taken port fails before anything starts
  const metrics = await startMetrics(p, log.say)
  const measured = metrics ? (await import('./metrics.ts')).agentMetrics(metrics.registry) : undefined
  const emit = (event: string, fields: Record<string, unknown>) => {
    log.at(levelOf(event, fields), event, fields)
    measured?.observe(event, fields)
  }
  const starting = startAgent({
    stateDir,
    ...(tokenArg !== undefined ? { token: () => readTextArg(tokenArg) } : {}),
    ...(coordinatorAddrs.length ? { coordinatorAddrs } : {}),
    ...(bootstrap.length ? { bootstrap } : {}),
    standby: standby === 'on',
    observers,
    // none by default: an agent only dials out (see the option's description), so
    // nothing should listen on every interface of a device for it
    listen,
    keepaliveMs,
    natKeepaliveMaxMs: natKeepaliveMax(p),
    hookEnv,
    activator,
    ...(nixProfile !== undefined ? { nixProfile: resolve(nixProfile) } : {}),
    nixKeepGenerations,
    timeZone,
    emit,
  })
  const agent = await closeMetricsOnFailure(metrics, starting)
  const unmeasure = await measured?.attach(agent)
  await new Promise<void>((resolveStop) => {
    process.once('SIGINT', () => resolveStop())
    process.once('SIGTERM', () => resolveStop())
  })
  emit('stopping', {})
  unmeasure?.()
  await agent.stop()
  await metrics?.close()
  return 0
}
