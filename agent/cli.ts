/** `fleetmesh agent`: runs the agent daemon until SIGINT/SIGTERM. */
import { resolve } from 'node:path'
import {
  duration,
  endpoints,
  flag,
  int,
  list,
  parseCommand,
  readTextArg,
  required,
  str,
  UsageError,
} from '../lib/index.ts'
import { startAgent } from './daemon.ts'

const USAGE =
  'fleetmesh agent --state <dir> [--token <fmtok1…|@file>] [--coordinator-addr <multiaddr>]... [--bootstrap <relay multiaddr>]... [--observers ip:port,...] ' +
  '[--listen <multiaddr>]... ' +
  '[--keepalive 10s] [--pass-env NAME]... [--activator auto|profile|nixos] ' +
  '[--nix-profile /nix/var/nix/profiles/system] [--nix-keep-generations 5] [--json] [--help]\n' +
  '  --activator             how generations are installed: "nixos" (NixOS system closures, with the\n' +
  '                          local Nix), "profile" (archives unpacked under <state>/profile), or\n' +
  '                          "auto" (default): nixos when /etc/NIXOS exists, else profile\n' +
  '  --nix-profile           the Nix profile the nixos activator points at each new system\n' +
  '  --nix-keep-generations  profile generations the nixos activator keeps (default 5)'

export async function agentCommand(argv: string[]): Promise<number> {
  const p = parseCommand(
    argv,
    {
      state: { type: 'string' },
      token: { type: 'string' },
      'coordinator-addr': { type: 'string', multiple: true },
      bootstrap: { type: 'string', multiple: true },
      observers: { type: 'string', multiple: true },
      listen: { type: 'string', multiple: true },
      keepalive: { type: 'string' },
      'pass-env': { type: 'string', multiple: true },
      activator: { type: 'string' },
      'nix-profile': { type: 'string' },
      'nix-keep-generations': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  )
  if (flag(p, 'help')) {
    process.stdout.write(`usage: ${USAGE}\n`)
    return 0
  }
  const json = flag(p, 'json')
  const emit = (event: string, fields: Record<string, unknown>) => {
    if (json) {
      process.stdout.write(`${JSON.stringify({ event, at: new Date().toISOString(), ...fields })}\n`)
      return
    }
    const detail = Object.entries(fields)
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
      .join(' ')
    process.stdout.write(`${event} ${detail}\n`)
  }
  const tokenArg = str(p, 'token')
  const token = tokenArg === undefined ? undefined : await readTextArg(tokenArg)
  const hookEnv: Record<string, string> = {}
  for (const name of list(p, 'pass-env')) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      throw new UsageError(`--pass-env "${name}" is not an environment variable name`)
    const value = process.env[name]
    if (value !== undefined) hookEnv[name] = value
  }
  const listen = list(p, 'listen')
  const coordinatorAddrs = list(p, 'coordinator-addr')
  const bootstrap = list(p, 'bootstrap')
  const keepaliveMs = duration(p, 'keepalive', 10_000)
  if (keepaliveMs < 200) throw new UsageError('--keepalive must be at least 200ms')
  const activator = str(p, 'activator') ?? 'auto'
  if (activator !== 'auto' && activator !== 'profile' && activator !== 'nixos')
    throw new UsageError(`--activator must be auto, profile or nixos, not "${activator}"`)
  const nixProfile = str(p, 'nix-profile')
  const nixKeepGenerations = int(p, 'nix-keep-generations', 5, 1, 1000)
  const agent = await startAgent({
    stateDir: resolve(required(p, 'state', USAGE)),
    ...(token !== undefined ? { token } : {}),
    ...(coordinatorAddrs.length ? { coordinatorAddrs } : {}),
    ...(bootstrap.length ? { bootstrap } : {}),
    observers: endpoints(p, 'observers'),
    listen: listen.length ? listen : ['/ip4/0.0.0.0/tcp/0'],
    keepaliveMs,
    hookEnv,
    activator,
    ...(nixProfile !== undefined ? { nixProfile: resolve(nixProfile) } : {}),
    nixKeepGenerations,
    emit,
  })
  await new Promise<void>((resolveStop) => {
    process.once('SIGINT', () => resolveStop())
    process.once('SIGTERM', () => resolveStop())
  })
  emit('stopping', {})
  await agent.stop()
  return 0
}
