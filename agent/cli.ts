/** `fleetmesh agent`: runs the agent daemon until SIGINT/SIGTERM. */
import { resolve } from 'node:path'
import {
  duration,
  endpoints,
  flag,
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
  '[--keepalive 10s] [--pass-env NAME]... [--json]'

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
      json: { type: 'boolean' },
    },
    USAGE,
  )
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
  const agent = await startAgent({
    stateDir: resolve(required(p, 'state', USAGE)),
    ...(token !== undefined ? { token } : {}),
    ...(coordinatorAddrs.length ? { coordinatorAddrs } : {}),
    ...(bootstrap.length ? { bootstrap } : {}),
    observers: endpoints(p, 'observers'),
    listen: listen.length ? listen : ['/ip4/0.0.0.0/tcp/0'],
    keepaliveMs,
    hookEnv,
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
