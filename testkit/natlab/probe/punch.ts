// TCP hole punch by simultaneous open, one side of it. For each trial:
//   1. connect to the rendezvous FROM local port L (base-port + trial), register;
//   2. on the peer's observed endpoint, keep (or close) the rendezvous socket and
//      net.connect to the peer FROM the same L, again and again (fresh socket
//      each time, short connect timeout) until one connects or the deadline;
//   3. on success decide roles by comparing names (both sides saw an outbound
//      connect succeed, so "who dialled" cannot decide), then move a payload both
//      ways and check it.
//
//   node punch.ts --name a --rendezvous 203.0.113.100:7100 --base-port 41000 --trials 20
//   stdout: {"event":"trial","trial":0,"ok":true,"attempts":1,"connectMs":3,...} … {"event":"done",...}

import { createHash, randomBytes } from 'node:crypto'
import type net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { emit, readCommands } from './io.ts'
import {
  HolePunchTimeoutError,
  meet,
  type PeerEndpoint,
  PunchExchangeError,
  readLine,
  simultaneousOpen,
} from './simopen.ts'

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    rendezvous: { type: 'string' },
    session: { type: 'string', default: 'punch' },
    'base-port': { type: 'string', default: '41000' },
    trials: { type: 'string', default: '1' },
    'attempt-timeout-ms': { type: 'string', default: '300' },
    'retry-delay-ms': { type: 'string', default: '25' },
    'deadline-ms': { type: 'string', default: '3000' },
    'keep-rendezvous': { type: 'string', default: 'yes' },
    'start-delay-ms': { type: 'string', default: '0' },
    'payload-bytes': { type: 'string', default: '65536' },
    'exchange-timeout-ms': { type: 'string', default: '3000' },
  },
})

if (values.name === undefined || values.rendezvous === undefined) {
  process.stderr.write('usage: punch.ts --name NAME --rendezvous HOST:PORT [options]\n')
  process.exit(2)
}
const name = values.name
// Only to exit with the parent: a probe whose stdin closes stops at once.
readCommands(() => {})
const [rvHost = '', rvPort = '0'] = values.rendezvous.split(':')
const opts = {
  basePort: Number(values['base-port']),
  trials: Number(values.trials),
  attemptTimeoutMs: Number(values['attempt-timeout-ms']),
  retryDelayMs: Number(values['retry-delay-ms']),
  deadlineMs: Number(values['deadline-ms']),
  keepRendezvous: values['keep-rendezvous'] === 'yes',
  startDelayMs: Number(values['start-delay-ms']),
  payloadBytes: Number(values['payload-bytes']),
  exchangeTimeoutMs: Number(values['exchange-timeout-ms']),
}

async function exchange(socket: net.Socket, peer: PeerEndpoint, role: string): Promise<number> {
  const payload = randomBytes(opts.payloadBytes)
  const sha256 = createHash('sha256').update(payload).digest('hex')
  socket.write(`${JSON.stringify({ type: 'hello', name, role, bytes: payload.length, sha256 })}\n`)
  socket.end(payload)
  const { line, rest } = await readLine(socket, opts.exchangeTimeoutMs)
  const hello: unknown = JSON.parse(line)
  if (
    typeof hello !== 'object' ||
    hello === null ||
    !('name' in hello && hello.name === peer.name) ||
    !('role' in hello && hello.role !== role) ||
    !('bytes' in hello && typeof hello.bytes === 'number') ||
    !('sha256' in hello && typeof hello.sha256 === 'string')
  ) {
    throw new PunchExchangeError(`unexpected hello ${line} (I am ${name}, ${role})`)
  }
  const expected = { bytes: hello.bytes, sha256: hello.sha256 }
  const chunks: Buffer[] = [rest]
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new PunchExchangeError(`payload not complete within ${opts.exchangeTimeoutMs} ms`)),
      opts.exchangeTimeoutMs,
    )
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.once('end', () => {
      clearTimeout(timer)
      resolve()
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.resume()
  })
  const received = Buffer.concat(chunks)
  const got = createHash('sha256').update(received).digest('hex')
  if (received.length !== expected.bytes || got !== expected.sha256) {
    throw new PunchExchangeError(`payload mismatch: ${received.length}/${expected.bytes} bytes`)
  }
  return received.length
}

function describeError(err: unknown): { name: string; message: string } {
  return err instanceof Error
    ? { name: err.name, message: err.message }
    : { name: 'Error', message: String(err) }
}

async function trial(index: number): Promise<boolean> {
  const localPort = opts.basePort + index
  const started = Date.now()
  let rv: net.Socket | undefined
  let attempts = 0
  let errors: Record<string, number> = {}
  try {
    const met = await meet(
      { address: rvHost, port: Number(rvPort) },
      localPort,
      `${values.session}-${index}`,
      name,
    )
    rv = met.socket
    const { peer } = met
    if (!opts.keepRendezvous) rv.end()
    if (opts.startDelayMs > 0) await delay(opts.startDelayMs)
    const goAt = Date.now()
    let punched: Awaited<ReturnType<typeof simultaneousOpen>>
    try {
      punched = await simultaneousOpen(peer, { localPort, ...opts })
    } catch (err) {
      if (err instanceof HolePunchTimeoutError) ({ attempts, errors } = err)
      throw err
    }
    ;({ attempts, errors } = punched)
    const connectMs = Date.now() - goAt
    const socket = punched.socket
    // Both sockets report an outbound connect: roles come from the identities.
    const role = name < peer.name ? 'initiator' : 'responder'
    const local = { address: socket.localAddress, port: socket.localPort }
    const remote = { address: socket.remoteAddress, port: socket.remotePort }
    const bytesReceived = await exchange(socket, peer, role)
    emit({
      event: 'trial',
      trial: index,
      ok: true,
      attempts,
      connectMs,
      totalMs: Date.now() - started,
      errors,
      role,
      peer,
      local,
      remote,
      bytesReceived,
    })
    return true
  } catch (err) {
    emit({
      event: 'trial',
      trial: index,
      ok: false,
      attempts,
      errors,
      elapsedMs: Date.now() - started,
      error: describeError(err),
    })
    return false
  } finally {
    rv?.destroy()
  }
}

let ok = 0
for (let i = 0; i < opts.trials; i++) {
  if (await trial(i)) ok++
}
emit({ event: 'done', ok, failed: opts.trials - ok })
process.exit(0)
