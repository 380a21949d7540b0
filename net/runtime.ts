/**
 * A running daemon's view of its own network situation, written atomically to
 * `<state>/runtime.json` every few seconds and on change, so `fleetmesh doctor`
 * (a separate process) can show it without a control socket: the addresses the
 * host listens on and is seen at, its connections and their paths, its relay
 * reservations and what the NAT detection found.
 */
import { join } from 'node:path'
import { z } from 'zod'
import { writeJsonAtomic } from '../lib/index.ts'
import type { HolePunchService } from './holepunch/index.ts'
import { extraService, type FleetHost, isCircuitAddr, isRelayed } from './host.ts'

export const RUNTIME_FILE = 'runtime.json'

const text = z.string().max(1024)

export const runtimeSnapshotSchema = z.object({
  role: z.enum(['coordinator', 'agent', 'relay']),
  pid: z.number().int(),
  peerId: text,
  at: z.number().int(),
  listen: z.array(text).max(256),
  /** What the host advertises (listen addresses, observed addresses, relay circuit addresses). */
  advertised: z.array(text).max(256),
  connections: z
    .array(
      z.object({
        peer: text,
        remoteAddr: text,
        direction: z.enum(['inbound', 'outbound']),
        relayed: z.boolean(),
      }),
    )
    .max(100_000),
  /** Role-specific detail (coordinator link state, reservations, NAT detection). */
  details: z.record(z.string().max(64), z.unknown()),
})
export type RuntimeSnapshot = z.infer<typeof runtimeSnapshotSchema>

export function snapshotHost(
  host: FleetHost,
  role: RuntimeSnapshot['role'],
  details: Record<string, unknown>,
  connectionLimit = 200,
): RuntimeSnapshot {
  return {
    role,
    pid: process.pid,
    peerId: host.peerId.toString(),
    at: Date.now(),
    listen: host
      .getMultiaddrs()
      .filter((a) => !isCircuitAddr(a))
      .map(String)
      .slice(0, 256),
    advertised: host.getMultiaddrs().map(String).slice(0, 256),
    connections: host
      .getConnections()
      .slice(0, connectionLimit)
      .map((c) => ({
        peer: c.remotePeer.toString(),
        remoteAddr: c.remoteAddr.toString(),
        direction: c.direction,
        relayed: isRelayed(c),
      })),
    details,
  }
}

/**
 * Writes the snapshot now and then every `intervalMs` until the returned stop
 * function is called. Failures are reported, never thrown: diagnostics must not
 * take the daemon down.
 */
export function keepRuntimeFile(
  stateDir: string,
  snapshot: () => RuntimeSnapshot,
  intervalMs = 5000,
  onError: (err: unknown) => void = () => {},
): { refresh(): void; stop(): Promise<void> } {
  const path = join(stateDir, RUNTIME_FILE)
  let writing: Promise<void> = Promise.resolve()
  const refresh = () => {
    writing = writing.then(() => writeJsonAtomic(path, snapshot())).catch(onError)
  }
  refresh()
  const timer = setInterval(refresh, intervalMs)
  timer.unref()
  return {
    refresh,
    async stop() {
      clearInterval(timer)
      await writing
    },
  }
}

/** The hole-punching service's state for runtime.json, when the host runs it. */
export function holePunchDetails(
  host: FleetHost,
  observers: readonly string[] = [],
): Record<string, unknown> {
  const service = extraService<HolePunchService>(host, 'holePunch')
  return service === undefined ? {} : { holePunch: { observers, ...service.status() } }
}
