/**
 * `fleetmesh doctor --state <dir>`: what a coordinator, relay or agent sees of
 * its network. It combines the running daemon's own report (runtime.json: listen
 * and advertised addresses, connections and their paths, relay reservations,
 * hole-punching state) with checks it runs itself: the machine's interfaces, the
 * NAT behaviour seen from a fresh port via the fleet's observers, and for an
 * agent whether each coordinator address accepts TCP connections.
 */
import net from 'node:net'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { defaultLogger } from '@libp2p/logger'
import { multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import {
  type CommandSpec,
  fileSize,
  flag,
  list,
  output,
  PersistError,
  parseCommand,
  readJsonIfExists,
  required,
  table,
  UsageError,
} from '../lib/index.ts'
import { parseEndpoint } from './holepunch/nat.ts'
import { type NatObservation, NatObserver } from './holepunch/observer-client.ts'
import { pickPunchPort } from './holepunch/punch-port.ts'
import { isCircuitAddr } from './host.ts'
import { RUNTIME_FILE, type RuntimeSnapshot, runtimeSnapshotSchema } from './runtime.ts'

const USAGE = 'fleetmesh doctor --state <dir> [--observer <ip:port>]... [--json]'

export const DOCTOR_COMMAND: CommandSpec = {
  name: 'doctor',
  summary:
    'On an agent, coordinator or relay: addresses, NAT behaviour, reservations, path to the coordinator. Exits 1 when the daemon is not running.',
  usage: USAGE,
  options: {
    state: {
      type: 'string',
      value: '<dir>',
      description: 'the state directory of the daemon to examine',
      required: true,
    },
    observer: {
      type: 'string',
      multiple: true,
      value: '<ip:port>',
      description: "NAT observer (a relay's observer port) to test this machine's NAT behaviour against",
    },
    json: { type: 'boolean', description: 'print the report as JSON' },
  },
  examples: ['fleetmesh doctor --state /var/lib/fleetmesh-agent --observer 203.0.113.7:4002'],
}
/** A runtime.json older than this means the daemon is not running (it rewrites every 5 s). */
const STALE_MS = 30_000

interface Reach {
  addr: string
  result: 'reachable' | 'refused' | 'timeout' | 'unsupported' | string
  ms?: number
}

export interface DoctorReport {
  stateDir: string
  role: string | null
  daemon: { running: boolean; ageMs: number | null; snapshot: RuntimeSnapshot | null; problem?: string }
  interfaces: { name: string; address: string }[]
  nat: NatObservation | null
  coordinator: { peerId: string; reach: Reach[] } | null
}

/**
 * What the doctor needs of an agent's enrollment.json (the agent owns its full
 * schema; net/ cannot import it): where the coordinator is.
 */
const enrollmentView = z.object({
  coordinator: z
    .object({ peerId: z.string(), addrs: z.array(z.string()) })
    .partial()
    .optional(),
})

/**
 * A state file the doctor reads, or why it could not: the doctor reports a
 * damaged file instead of failing, since diagnosing a broken host is its job.
 */
async function readStateFile<S extends z.ZodType>(
  path: string,
  schema: S,
): Promise<{ value: z.output<S> | undefined; problem?: string }> {
  try {
    return { value: await readJsonIfExists(path, schema) }
  } catch (err) {
    if (err instanceof PersistError) return { value: undefined, problem: err.message }
    throw err
  }
}

const exists = async (path: string): Promise<boolean> => (await fileSize(path)) !== undefined

function tcpReach(addr: string, timeoutMs: number): Promise<Reach> {
  let host: string
  let port: number
  try {
    const ma = multiaddr(addr)
    const components = ma.getComponents()
    const ip = components.find(
      (c) => c.name === 'ip4' || c.name === 'ip6' || c.name === 'dns4' || c.name === 'dns',
    )
    const tcp = components.find((c) => c.name === 'tcp')
    if (ip?.value === undefined || tcp?.value === undefined || isCircuitAddr(ma)) {
      return Promise.resolve({ addr, result: 'unsupported' })
    }
    host = ip.value
    port = Number(tcp.value)
  } catch {
    return Promise.resolve({ addr, result: 'unsupported' })
  }
  const started = performance.now()
  return new Promise((resolve) => {
    const socket = net.connect({ host, port })
    const done = (result: Reach['result']) => {
      socket.destroy()
      resolve({ addr, result, ms: Math.round(performance.now() - started) })
    }
    socket.setTimeout(timeoutMs, () => done('timeout'))
    socket.once('connect', () => done('reachable'))
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' ? 'refused' : (err.code ?? err.message)),
    )
  })
}

async function detectNat(observers: string[]): Promise<NatObservation | null> {
  if (observers.length === 0) return null
  const nat = new NatObserver({
    observers: observers.map(parseEndpoint),
    localPort: await pickPunchPort(),
    timeoutMs: 3000,
    reprobeIntervalMs: 3_600_000,
    log: defaultLogger().forComponent('fleetmesh:doctor'),
  })
  try {
    return await nat.probe()
  } finally {
    nat.stop()
  }
}

export async function diagnose(stateDir: string, extraObservers: string[]): Promise<DoctorReport> {
  const runtime = await readStateFile(join(stateDir, RUNTIME_FILE), runtimeSnapshotSchema)
  const snapshot = runtime.value ?? null
  const ageMs = snapshot === null ? null : Date.now() - snapshot.at
  let alive = false
  if (snapshot !== null) {
    try {
      process.kill(snapshot.pid, 0)
      alive = true
    } catch {
      alive = false
    }
  }
  const running = snapshot !== null && alive && (ageMs ?? Infinity) < STALE_MS
  const enrollmentPath = join(stateDir, 'enrollment.json')
  const enrollment = (await readStateFile(enrollmentPath, enrollmentView)).value
  const role =
    snapshot?.role ??
    ((await exists(enrollmentPath))
      ? 'agent'
      : (await exists(join(stateDir, 'coordinator.json')))
        ? 'coordinator'
        : null)
  if (role === null && snapshot === null) {
    throw new UsageError(
      `${stateDir} holds no fleetmesh agent, coordinator or relay state (no runtime.json, enrollment.json or coordinator.json)`,
    )
  }
  const holePunch = snapshot?.details.holePunch as { observers?: string[] } | undefined
  const observers = [...new Set([...extraObservers, ...(holePunch?.observers ?? [])])]
  const interfaces = Object.entries(networkInterfaces()).flatMap(([name, addrs]) =>
    (addrs ?? []).filter((a) => !a.internal).map((a) => ({ name, address: `${a.address}/${a.netmask}` })),
  )
  const coordinatorAddrs = enrollment?.coordinator?.addrs ?? []
  const [nat, reach] = await Promise.all([
    detectNat(observers),
    Promise.all(coordinatorAddrs.map((a) => tcpReach(a, 3000))),
  ])
  return {
    stateDir,
    role,
    daemon: {
      running,
      ageMs,
      snapshot,
      ...(snapshot === null
        ? {
            problem:
              runtime.problem ?? `no ${RUNTIME_FILE}: the daemon has not run with this state directory`,
          }
        : running
          ? {}
          : { problem: `the daemon (pid ${snapshot.pid}) is not running; what follows is its last report` }),
    },
    interfaces,
    nat,
    coordinator: enrollment?.coordinator?.peerId ? { peerId: enrollment.coordinator.peerId, reach } : null,
  }
}

function human(r: DoctorReport): string {
  const out: string[] = [`${r.role ?? 'unknown role'} in ${r.stateDir}`]
  const s = r.daemon.snapshot
  out.push(
    r.daemon.running
      ? `daemon: running (pid ${s?.pid}, report ${Math.round((r.daemon.ageMs ?? 0) / 1000)} s old)`
      : `daemon: ${r.daemon.problem}`,
  )
  out.push(
    '',
    'interfaces:',
    ...(r.interfaces.length
      ? r.interfaces.map((i) => `  ${i.name.padEnd(12)} ${i.address}`)
      : ['  (none besides loopback)']),
  )
  if (s !== null) {
    out.push('', `peer id: ${s.peerId}`, 'listening on:', ...s.listen.map((a) => `  ${a}`))
    const relayed = s.advertised.filter((a) => a.includes('/p2p-circuit'))
    out.push(
      'reachable through relays:',
      ...(relayed.length ? relayed.map((a) => `  ${a}`) : ['  (no relay reservation)']),
    )
    if (s.connections.length > 0) {
      out.push(
        '',
        table(
          ['PEER', 'PATH', 'DIRECTION', 'REMOTE ADDRESS'],
          s.connections.map((c) => [
            c.peer.slice(-12),
            c.relayed ? 'relayed' : 'direct',
            c.direction,
            c.remoteAddr,
          ]),
        ),
      )
    }
    for (const [k, v] of Object.entries(s.details))
      out.push(
        '',
        `${k}:`,
        ...JSON.stringify(v, null, 2)
          .split('\n')
          .map((l) => `  ${l}`),
      )
  }
  out.push('', 'NAT behaviour (probed now from a fresh port):')
  if (r.nat === null)
    out.push('  not probed: no observers known (give --observer <ip:port> of a relay or public coordinator)')
  else {
    out.push(
      `  ${r.nat.natKind}${r.nat.observed ? `, seen as ${r.nat.observed.address}:${r.nat.observed.port}` : ''}${r.nat.local ? ` from ${r.nat.local.address}:${r.nat.local.port}` : ''}`,
    )
    for (const o of r.nat.observers)
      out.push(
        `  observer ${o.observer}: ${o.observed ? `${o.observed.address}:${o.observed.port}` : o.error}`,
      )
    if (r.nat.natKind === 'symmetric')
      out.push(
        '  symmetric NAT: direct connections to other NATed peers are not possible; traffic goes through the relay',
      )
  }
  if (r.coordinator !== null) {
    out.push('', `coordinator ${r.coordinator.peerId}:`)
    for (const c of r.coordinator.reach)
      out.push(`  ${c.addr}: ${c.result}${c.ms !== undefined ? ` (${c.ms} ms)` : ''}`)
  }
  return out.join('\n')
}

export async function doctorCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, DOCTOR_COMMAND)
  const observers = list(p, 'observer')
  for (const o of observers) {
    try {
      parseEndpoint(o)
    } catch {
      throw new UsageError(`--observer "${o}" is not an ip:port`)
    }
  }
  const report = await diagnose(required(p, 'state', USAGE), observers)
  output(flag(p, 'json'), report, () => human(report))
  return report.daemon.running ? 0 : 1
}
