// Test-side helpers for sock.ts and observer.ts (runs in the test process, not
// in a namespace): start them on lab hosts, open a socket and wait for its
// outcome, read what an observer saw. Used by the NAT lab's own tests and the
// raw hole-punching tests (test/natlab/lab.test.ts, holepunch.test.ts).

import { type Lab, probePath } from '../lab.ts'
import type { LabProcess, ProbeEvent } from '../lab-process.ts'
import type { LabHost } from '../topology.ts'
import type { ConnectedEvent, DataEvent, Endpoint, ListeningEvent, SockErrorEvent } from './events.ts'

/** Starts observer.ts on `host`; resolves with the endpoint clients connect to once it listens. */
export async function startObserver(lab: Lab, host: LabHost, port = 7000): Promise<Endpoint> {
  await lab
    .spawnNode(host, probePath('observer.ts'), ['--port', String(port)])
    .waitFor<ListeningEvent>('listening')
  return { address: host.ip, port }
}

/** Starts a sock.ts puppet on `host`; resolves once it takes commands. */
export async function startPuppet(lab: Lab, host: LabHost): Promise<LabProcess> {
  const puppet = lab.spawnNode(host, probePath('sock.ts'))
  await puppet.waitFor('ready')
  return puppet
}

export function eventFor(id: string, ...names: string[]): (event: ProbeEvent) => boolean {
  return (event) => names.includes(event.event) && event.id === id
}

/** Connect socket `id` and resolve with its `connected` or connect `error` event. */
export function open(
  puppet: LabProcess,
  id: string,
  target: Endpoint,
  options: { localPort?: number; timeoutMs?: number } = {},
): Promise<ConnectedEvent | SockErrorEvent> {
  const timeoutMs = options.timeoutMs ?? 3_000
  puppet.send({
    cmd: 'connect',
    id,
    host: target.address,
    port: target.port,
    localPort: options.localPort,
    timeoutMs,
  })
  return puppet.waitFor<ConnectedEvent | SockErrorEvent>(
    eventFor(id, 'connected', 'error'),
    timeoutMs + 2_000,
  )
}

/** The next line received on socket `id`. */
export async function nextLine(puppet: LabProcess, id: string, timeoutMs = 3_000): Promise<string> {
  return (await puppet.waitFor<DataEvent>(eventFor(id, 'data'), timeoutMs)).line
}

function parseEndpoint(line: string): Endpoint {
  const value: unknown = JSON.parse(line)
  if (
    typeof value === 'object' &&
    value !== null &&
    'address' in value &&
    typeof value.address === 'string' &&
    'port' in value &&
    typeof value.port === 'number'
  ) {
    return { address: value.address, port: value.port }
  }
  throw new Error(`observer answered ${line}, expected {"address","port"}`)
}

/** Connect socket `id` to an observer.ts and return the source endpoint it saw. */
export async function observe(
  puppet: LabProcess,
  id: string,
  observer: Endpoint,
  localPort?: number,
): Promise<Endpoint> {
  const result = await open(puppet, id, observer, { localPort })
  if (result.event !== 'connected') {
    throw new Error(
      `connect ${id} to ${observer.address}:${observer.port} failed: ${result.code} ${result.message}`,
    )
  }
  return parseEndpoint(await nextLine(puppet, id))
}

/** Start a listener `id` on `port` in the puppet's namespace. */
export function listen(
  puppet: LabProcess,
  id: string,
  port: number,
  options: { reusePort?: boolean } = {},
): Promise<ListeningEvent | SockErrorEvent> {
  puppet.send({ cmd: 'listen', id, port, reusePort: options.reusePort ?? false })
  return puppet.waitFor<ListeningEvent | SockErrorEvent>(eventFor(id, 'listening', 'error'))
}
