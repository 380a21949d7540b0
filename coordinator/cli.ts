/** `fleetmesh coordinator`: runs the coordinator daemon until SIGINT/SIGTERM. */
import { resolve } from 'node:path'
import { duration, flag, int, list, type Parsed, parseCommand, required } from '../protocol/cli.ts'
import { startCoordinator } from './daemon.ts'

const USAGE =
  'fleetmesh coordinator --state <dir> [--listen <multiaddr>]... [--announce <multiaddr>]... [--bootstrap <multiaddr>]... ' +
  '[--reserve-on <relay multiaddr>]... [--relay-max-reservations N] [--relay-data-limit-mb N] [--relay-duration-limit 24h] [--json]'

export async function coordinatorCommand(argv: string[]): Promise<number> {
  const p: Parsed = parseCommand(
    argv,
    {
      state: { type: 'string' },
      listen: { type: 'string', multiple: true },
      announce: { type: 'string', multiple: true },
      bootstrap: { type: 'string', multiple: true },
      'reserve-on': { type: 'string', multiple: true },
      'relay-max-reservations': { type: 'string' },
      'relay-data-limit-mb': { type: 'string' },
      'relay-duration-limit': { type: 'string' },
      'idle-timeout': { type: 'string' },
      json: { type: 'boolean' },
    },
    USAGE,
  )
  const json = flag(p, 'json')
  const say = (event: string, fields: Record<string, unknown>, human: string) => {
    if (json) process.stdout.write(`${JSON.stringify({ event, at: new Date().toISOString(), ...fields })}\n`)
    else process.stdout.write(`${human}\n`)
  }
  const listen = list(p, 'listen')
  const announce = list(p, 'announce')
  const bootstrap = list(p, 'bootstrap')
  const reserveOn = list(p, 'reserve-on')
  const running = await startCoordinator({
    stateDir: resolve(required(p, 'state', USAGE)),
    ...(listen.length ? { listen } : {}),
    ...(announce.length ? { announce } : {}),
    ...(bootstrap.length ? { bootstrap } : {}),
    ...(reserveOn.length ? { reserveOn } : {}),
    relay: {
      maxReservations: int(p, 'relay-max-reservations', 4096, 0, 1_000_000),
      dataLimitBytes: int(p, 'relay-data-limit-mb', 256, 1, 1_000_000) * 1024 * 1024,
      durationLimitMs: duration(p, 'relay-duration-limit', 86_400_000),
    },
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
  running.events.on((e) => {
    if (e.type === 'status')
      say(
        'status',
        { machine: e.machine, state: e.status.report.state, seq: e.status.seq },
        `${e.machine}: ${e.status.report.state}`,
      )
    else if (e.type === 'online' || e.type === 'offline')
      say(e.type, { machine: e.machine }, `${e.machine}: ${e.type}`)
  })
  await new Promise<void>((resolveStop) => {
    const stop = () => resolveStop()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  say('stopping', {}, 'stopping')
  await running.stop()
  return 0
}
