/**
 * `fleetmesh doctor --state <dir>`: what a coordinator, relay or agent sees of
 * its network. It combines the running daemon's own report (runtime.json: listen
 * and advertised addresses, connections and their paths, relay reservations,
 * hole-punching state) with checks it runs itself: the machine's interfaces, the
 * NAT behaviour seen from a fresh port via the fleet's observers, and for an
 * agent whether each coordinator address accepts TCP connections (a relay
 * circuit address: whether a libp2p dial through it reaches the coordinator). The text it
 * prints is doctor-format.ts's, which `fleetmesh doctor <machine>` shares.
 */
import net from 'node:net'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import {
  errorMessage,
  fileSize,
  isProcessRunning,
  type Options,
  output,
  PersistError,
  readJsonIfExists,
  UsageError,
} from '../lib/index.ts'
import { formatDoctorReport } from './doctor-format.ts'
import { parseEndpoint } from './holepunch/nat.ts'
import { type NatObservation, NatObserver } from './holepunch/observer-client.ts'
import { pickPunchPort } from './holepunch/punch-port.ts'
import { createHost, isCircuitAddr } from './host.ts'
import { stopHost } from './host-stop.ts'
import { RUNTIME_FILE, type RuntimeSnapshot, runtimeSnapshotSchema } from './runtime.ts'

/** The options of a doctor run here, on the daemon's machine. */
export const LOCAL_DOCTOR_OPTIONS = {
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
} as const satisfies Options

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

/**
 * The relayed path: a libp2p dial through the relay's circuit to the
 * coordinator (relay connection, reservation lookup, Noise and Yamux through the
 * relay), from a throwaway identity, timed. A TCP connect would only show the
 * relay's port is open. A QUIC address is checked the same way (its handshake).
 */
async function circuitReach(addr: string, peerId: string, timeoutMs: number): Promise<Reach> {
  let target: Multiaddr
  try {
    target = multiaddr(addr.includes(`/p2p/${peerId}`) ? addr : `${addr}/p2p/${peerId}`)
  } catch {
    return { addr, result: 'unsupported' }
  }
  const host = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519') })
  const started = performance.now()
  try {
    await host.dial(target, { signal: AbortSignal.timeout(timeoutMs) })
    return { addr, result: 'reachable', ms: Math.round(performance.now() - started) }
  } catch (err) {
    const result = performance.now() - started >= timeoutMs ? 'timeout' : errorMessage(err).slice(0, 200)
    return { addr, result, ms: Math.round(performance.now() - started) }
  } finally {
    await stopHost(host)
  }
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

/** This machine's non-loopback interface addresses, "address/netmask". */
export function localInterfaces(): { name: string; address: string }[] {
  return Object.entries(networkInterfaces()).flatMap(([name, addrs]) =>
    (addrs ?? []).filter((a) => !a.internal).map((a) => ({ name, address: `${a.address}/${a.netmask}` })),
  )
}

export async function diagnose(stateDir: string, extraObservers: string[]): Promise<DoctorReport> {
  const runtime = await readStateFile(join(stateDir, RUNTIME_FILE), runtimeSnapshotSchema)
  const snapshot = runtime.value ?? null
  const ageMs = snapshot === null ? null : Date.now() - snapshot.at
  const alive = snapshot !== null && isProcessRunning(snapshot.pid)
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
  const interfaces = localInterfaces()
  const coordinatorAddrs = enrollment?.coordinator?.addrs ?? []
  const coordinatorId = enrollment?.coordinator?.peerId
  const [nat, reach] = await Promise.all([
    detectNat(observers),
    Promise.all(
      coordinatorAddrs.map((a) =>
        // QUIC has no connect to time but its handshake: a libp2p dial, as through a relay
        (a.includes('/p2p-circuit') || a.includes('/quic-v1')) && coordinatorId !== undefined
          ? circuitReach(a, coordinatorId, 10_000)
          : tcpReach(a, 3000),
      ),
    ),
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

/** Examines the daemon of `stateDir` and prints what it found; exits 1 when the daemon is not running. */
export async function localDoctor(stateDir: string, observers: string[], json: boolean): Promise<number> {
  for (const o of observers) {
    try {
      parseEndpoint(o)
    } catch {
      throw new UsageError(`--observer "${o}" is not an ip:port`)
    }
  }
  const report = await diagnose(stateDir, observers)
  output(json, report, () => formatDoctorReport(report))
  return report.daemon.running ? 0 : 1
}
