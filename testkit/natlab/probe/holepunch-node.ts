// A fleetmesh host with the hole-punching service, run inside a lab namespace
// and driven through stdin; it reports what happens as JSON lines. With
// --observer-ports it is a public relay that also runs the observer (and no
// hole-punching service). Started through ../probe-commands.ts by
// test/natlab/holepunch-service.test.ts and by `npm run bench:nat`.
//
//   node holepunch-node.ts --role relay --listen /ip4/0.0.0.0/tcp/4001 --observer-ports 7001,7002
//   node holepunch-node.ts --role agent --reserve-on /ip4/203.0.113.100/tcp/4001/p2p/12D3Koo… \
//        --observers 203.0.113.100:7001,203.0.113.100:7002
//
// Events: ready {peerId, addrs, punchPort, natKind, observed}; conn-open and
// conn-close {peer, id, addr, relayed, direction}; attempt {…PunchAttempt};
// observation {…}; and one answer per command, carrying the command's `ref`:
//   {"cmd":"dial","ref":"d1","addr":"/ip4/…/p2p-circuit/p2p/12D3Koo…"} → dialed {peer, id, addr, relayed}
//   {"cmd":"echo","ref":"e1","peer":"12D3Koo…","text":"hi"}   → echo {ok, text, id, addr, relayed, ms}
//                    (on the direct connection if there is one, else on the relayed one)
//   {"cmd":"punch","ref":"p1","peer":"12D3Koo…","force":true} → punched {ok, addr, ms} | {ok:false, error}
//   {"cmd":"status","ref":"s1"}                               → status {status}
//   {"cmd":"hangup","ref":"h1","peer":"12D3Koo…"}             → hungup {}
// A failed command answers {"event":"failed","ref",…,"error":{name,message}}.

import { parseArgs } from 'node:util'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import {
  createHost,
  type HolePunchService,
  type HostRole,
  holePunch,
  isRelayed,
  startObserver,
} from '../../../net/index.ts'
import { FramedStream, handleFramed } from '../../../protocol/index.ts'
import { emit, readCommands } from './io.ts'

const ECHO_PROTOCOL = '/fleetmesh-test/echo/1'

const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'agent' },
    listen: { type: 'string' },
    'reserve-on': { type: 'string' },
    'observer-ports': { type: 'string' },
    observers: { type: 'string' },
    'attempt-timeout-ms': { type: 'string' },
    'deadline-ms': { type: 'string' },
    'backoff-ms': { type: 'string' },
    auto: { type: 'string', default: 'yes' },
  },
})

const list = (value: string | undefined): string[] =>
  value === undefined || value === '' ? [] : value.split(',').map((s) => s.trim())
const num = (value: string | undefined): number | undefined =>
  value === undefined ? undefined : Number(value)

function errorOf(err: unknown): { name: string; message: string } {
  return err instanceof Error
    ? { name: err.name, message: err.message }
    : { name: 'Error', message: String(err) }
}

function describe(connection: Connection): Record<string, unknown> {
  return {
    peer: connection.remotePeer.toString(),
    id: connection.id,
    addr: connection.remoteAddr.toString(),
    relayed: isRelayed(connection),
    direction: connection.direction,
  }
}

const role = values.role as HostRole
const observerPorts = list(values['observer-ports']).map(Number)
const runsService = observerPorts.length === 0

const host = await createHost({
  role,
  privateKey: await generateKeyPair('Ed25519'),
  listen: values.listen === undefined ? undefined : list(values.listen),
  reserveOn: list(values['reserve-on']),
  extraServices: runsService
    ? {
        holePunch: holePunch({
          observers: list(values.observers),
          attemptTimeoutMs: num(values['attempt-timeout-ms']),
          deadlineMs: num(values['deadline-ms']),
          backoffMs: num(values['backoff-ms']),
          autoPunch: values.auto === 'yes',
        }),
      }
    : {},
})
const service = (host.services as { holePunch?: HolePunchService }).holePunch

host.addEventListener('connection:open', (evt) => emit({ event: 'conn-open', ...describe(evt.detail) }))
host.addEventListener('connection:close', (evt) => emit({ event: 'conn-close', ...describe(evt.detail) }))
service?.addEventListener('attempt', (evt) => emit({ event: 'attempt', ...evt.detail }))
service?.addEventListener('observation', (evt) => emit({ event: 'observation', ...evt.detail }))

await handleFramed(host, ECHO_PROTOCOL, async (fs) => {
  for await (const frame of fs) await fs.send(frame)
})

const observer =
  observerPorts.length > 0 ? await startObserver({ host: '0.0.0.0', ports: observerPorts }) : undefined

/** The connection new streams to `peer` should use: direct first, else relayed */
function bestConnection(peer: PeerId): Connection | undefined {
  const open = host.getConnections(peer).filter((c) => c.status === 'open')
  return open.find((c) => !isRelayed(c)) ?? open[0]
}

async function echo(peer: PeerId, text: string): Promise<Record<string, unknown>> {
  const connection = bestConnection(peer)
  if (connection === undefined) throw new Error(`no connection to ${peer}`)
  const started = performance.now()
  const fs = new FramedStream(await connection.newStream(ECHO_PROTOCOL, { runOnLimitedConnection: true }))
  await fs.send(new TextEncoder().encode(text))
  const answer = new TextDecoder().decode(await fs.readOne({ timeoutMs: 5_000 }))
  await fs.close()
  return {
    ok: answer === text,
    text: answer,
    ms: Math.round(performance.now() - started),
    ...describe(connection),
  }
}

async function run(command: Record<string, unknown>): Promise<void> {
  const ref = command.ref
  const peer = typeof command.peer === 'string' ? peerIdFromString(command.peer) : undefined
  try {
    switch (command.cmd) {
      case 'dial': {
        const connection = await host.dial(multiaddr(String(command.addr)), {
          signal: AbortSignal.timeout(10_000),
        })
        emit({ event: 'dialed', ref, ...describe(connection) })
        break
      }
      case 'echo':
        if (peer === undefined) throw new TypeError('echo needs "peer"')
        emit({ event: 'echo', ref, ...(await echo(peer, String(command.text ?? 'ping'))) })
        break
      case 'punch': {
        if (peer === undefined || service === undefined)
          throw new TypeError('punch needs "peer" and the service')
        const started = performance.now()
        try {
          const connection = await service.punch(peer, { force: command.force === true })
          emit({
            event: 'punched',
            ref,
            ok: true,
            ms: Math.round(performance.now() - started),
            ...describe(connection),
          })
        } catch (err) {
          emit({
            event: 'punched',
            ref,
            ok: false,
            ms: Math.round(performance.now() - started),
            error: errorOf(err),
          })
        }
        break
      }
      case 'status':
        emit({ event: 'status', ref, status: service?.status() ?? null })
        break
      case 'hangup':
        if (peer === undefined) throw new TypeError('hangup needs "peer"')
        await host.hangUp(peer, { signal: AbortSignal.timeout(5_000) })
        emit({ event: 'hungup', ref })
        break
      default:
        emit({ event: 'bad-command', command })
    }
  } catch (err) {
    emit({ event: 'failed', ref, cmd: command.cmd, error: errorOf(err) })
  }
}

readCommands((command) => void run(command))

const status = service?.status()
// the first observation, so a test knows the NAT kind before it dials
const observation = await service?.refreshObservation()
emit({
  event: 'ready',
  peerId: host.peerId.toString(),
  addrs: host.getMultiaddrs().map(String),
  observerPorts: observer?.ports ?? [],
  punchPort: status?.punchPort ?? null,
  natKind: observation?.natKind ?? null,
  observed: observation?.observed ?? null,
})
