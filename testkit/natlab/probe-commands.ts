/**
 * The hole-punch probe (probe/holepunch-node.ts) from the test side: starting
 * it as a public relay that also observes NATs or as a peer that reserves on
 * that relay, sending it commands, and matching the events it prints. Used by
 * test/natlab/holepunch-service.test.ts and by `npm run bench:nat`.
 */
import { type Lab, probePath } from './lab.ts'
import type { LabProcess, ProbeEvent } from './lab-process.ts'
import type { LabHost } from './topology.ts'

export const HOLEPUNCH_NODE = probePath('holepunch-node.ts')
export const RELAY_PORT = 4001
export const OBSERVER_PORTS: readonly number[] = [7001, 7002]

/** What holepunch-node.ts prints once it is listening (and, as a peer, has its reservation). */
export interface ReadyEvent extends ProbeEvent {
  event: 'ready'
  peerId: string
  addrs: string[]
  punchPort: number | null
  natKind: string | null
  observed: { address: string; port: number } | null
}

export interface HolepunchRelay {
  proc: LabProcess
  ready: ReadyEvent
  /** `/ip4/<ip>/tcp/4001/p2p/<relay id>`, for `--reserve-on` */
  addr: string
  /** `ip:port,ip:port` of its NAT observers, for `--observers` */
  observers: string
}

/** Starts the probe on a public `host` as a relay that also runs the NAT observer. */
export async function startHolepunchRelay(
  lab: Lab,
  host: LabHost,
  timeoutMs = 30_000,
): Promise<HolepunchRelay> {
  const proc = lab.spawnNode(host, HOLEPUNCH_NODE, [
    '--role',
    'relay',
    '--listen',
    `/ip4/0.0.0.0/tcp/${RELAY_PORT}`,
    '--observer-ports',
    OBSERVER_PORTS.join(','),
  ])
  const ready = await proc.waitFor<ReadyEvent>('ready', timeoutMs)
  return {
    proc,
    ready,
    addr: `/ip4/${host.ip}/tcp/${RELAY_PORT}/p2p/${ready.peerId}`,
    observers: OBSERVER_PORTS.map((port) => `${host.ip}:${port}`).join(','),
  }
}

export interface HolepunchPeer {
  name: string
  host: LabHost
  proc: LabProcess
  id: string
  /** Its address through the relay, which another peer dials to start a punch */
  circuit: string
  ready: ReadyEvent
}

/**
 * Starts the probe on `host` with `args` (its role, `--reserve-on`,
 * `--observers`, timing options); resolves once it is ready with a relayed
 * address.
 */
export async function startHolepunchPeer(
  lab: Lab,
  host: LabHost,
  args: readonly string[],
  timeoutMs = 30_000,
): Promise<HolepunchPeer> {
  const proc = lab.spawnNode(host, HOLEPUNCH_NODE, args)
  const ready = await proc.waitFor<ReadyEvent>('ready', timeoutMs)
  const circuit = ready.addrs.find((a) => a.includes('/p2p-circuit'))
  if (circuit === undefined) throw new Error(`${host.name} has no relayed address: ${ready.addrs.join(' ')}`)
  return { name: host.name, host, proc, id: ready.peerId, circuit, ready }
}

let refs = 0

/** Sends a command and waits for its answer, throwing if the probe reports it failed. */
export async function command<E extends ProbeEvent = ProbeEvent>(
  peer: { proc: LabProcess; name?: string },
  cmd: Record<string, unknown>,
  answer: string,
  timeoutMs = 15_000,
): Promise<E> {
  const ref = `r${refs++}`
  peer.proc.send({ ...cmd, ref })
  const event = await peer.proc.waitFor(
    (e) => e.ref === ref && (e.event === answer || e.event === 'failed'),
    timeoutMs,
  )
  if (event.event === 'failed') {
    throw new Error(
      `${peer.name ?? peer.proc.label} ${String(cmd.cmd)} failed: ${JSON.stringify(event.error)}`,
    )
  }
  return event as E
}

/** Matches a hole-punch attempt record about `peer`. */
export const attemptWith =
  (peer: string) =>
  (e: ProbeEvent): boolean =>
    e.event === 'attempt' && e.peer === peer

/** Matches a connection to `peer` opening or closing, relayed or direct (and, given `id`, that one). */
export const connEvent =
  (event: 'conn-open' | 'conn-close', peer: string, relayed: boolean, id?: string) =>
  (e: ProbeEvent): boolean =>
    e.event === event && e.peer === peer && e.relayed === relayed && (id === undefined || e.id === id)
