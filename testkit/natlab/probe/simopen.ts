// TCP simultaneous open from Node, the part of punch.ts worth keeping: meet at a
// rendezvous from local port L, then connect to the peer's observed endpoint
// from the same L, with fresh sockets and short timeouts, until one connects.
// Prototype for a fleetmesh hole-punching service; see docs/hole-punching-study.md.
// Used by punch.ts and libp2p-punch.ts.

import net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { errorCode } from './io.ts'

export interface PeerEndpoint {
  name: string
  address: string
  port: number
}

export interface SimultaneousOpenOptions {
  /** The local port used for the rendezvous; the NAT maps it to the observed port. */
  localPort: number
  /** Per attempt. Below the kernel's 1 s initial SYN RTO, so each attempt is one SYN. */
  attemptTimeoutMs: number
  /** Pause after a fast failure (RST -> ECONNREFUSED) so the loop cannot spin. */
  retryDelayMs: number
  deadlineMs: number
}

export class HolePunchTimeoutError extends Error {
  override readonly name = 'HolePunchTimeoutError'
  readonly attempts: number
  readonly errors: Record<string, number>

  constructor(message: string, attempts: number, errors: Record<string, number>) {
    super(message)
    this.attempts = attempts
    this.errors = errors
  }
}

export class PunchExchangeError extends Error {
  override readonly name = 'PunchExchangeError'
}

/** One connect from `localPort` (SO_REUSEADDR is set by libuv on every bind). */
export function connectFrom(
  host: string,
  port: number,
  localPort: number,
  timeoutMs: number,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, localPort })
    const timer = setTimeout(() => {
      socket.destroy()
      const err = new Error(`connect to ${host}:${port} from :${localPort} got no answer in ${timeoutMs} ms`)
      reject(Object.assign(err, { code: 'ETIMEDOUT' }))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.removeAllListeners('error')
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    })
  })
}

/** Read one newline-terminated line; the socket is left paused with `rest` unread. */
export function readLine(socket: net.Socket, timeoutMs: number): Promise<{ line: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0)
    const cleanup = (): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('error', onError)
      socket.off('end', onEnd)
    }
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk])
      const nl = buffered.indexOf(10)
      if (nl < 0) return
      cleanup()
      socket.pause()
      resolve({ line: buffered.subarray(0, nl).toString('utf8'), rest: buffered.subarray(nl + 1) })
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const onEnd = (): void => {
      cleanup()
      reject(new PunchExchangeError('connection ended before a full line arrived'))
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new PunchExchangeError(`no line within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.on('data', onData)
    socket.once('error', onError)
    socket.once('end', onEnd)
    socket.resume()
  })
}

/**
 * Register `name` for `session` at the rendezvous, from `localPort`, and wait
 * for the peer's observed endpoint. The returned socket still holds the mapping.
 */
export async function meet(
  rendezvous: { address: string; port: number },
  localPort: number,
  session: string,
  name: string,
): Promise<{ socket: net.Socket; peer: PeerEndpoint }> {
  const socket = await connectFrom(rendezvous.address, rendezvous.port, localPort, 5_000)
  socket.write(`${JSON.stringify({ type: 'register', session, name })}\n`)
  const { line } = await readLine(socket, 10_000)
  const msg: unknown = JSON.parse(line)
  if (
    typeof msg !== 'object' ||
    msg === null ||
    !('name' in msg && typeof msg.name === 'string') ||
    !('address' in msg && typeof msg.address === 'string') ||
    !('port' in msg && typeof msg.port === 'number')
  ) {
    socket.destroy()
    throw new PunchExchangeError(`unexpected rendezvous answer ${line}`)
  }
  return { socket, peer: { name: msg.name, address: msg.address, port: msg.port } }
}

/**
 * Connect to `peer` from `options.localPort` until a connection is established
 * (by simultaneous open or by the peer's SYN meeting ours) or the deadline.
 * Both sides must run this at about the same time.
 */
export async function simultaneousOpen(
  peer: PeerEndpoint,
  options: SimultaneousOpenOptions,
): Promise<{ socket: net.Socket; attempts: number; errors: Record<string, number> }> {
  const deadline = Date.now() + options.deadlineMs
  const errors: Record<string, number> = {}
  let attempts = 0
  for (let left = options.deadlineMs; left > 0; left = deadline - Date.now()) {
    attempts++
    try {
      const socket = await connectFrom(
        peer.address,
        peer.port,
        options.localPort,
        Math.min(options.attemptTimeoutMs, left),
      )
      return { socket, attempts, errors }
    } catch (err) {
      const code = errorCode(err)
      errors[code] = (errors[code] ?? 0) + 1
      // A timeout already spent its time; a fast failure is paced.
      if (code !== 'ETIMEDOUT')
        await delay(Math.max(0, Math.min(options.retryDelayMs, deadline - Date.now())))
    }
  }
  const summary = Object.entries(errors)
    .map(([code, n]) => `${code}×${n}`)
    .join(', ')
  throw new HolePunchTimeoutError(
    `no direct connection to ${peer.name} at ${peer.address}:${peer.port} from local port ${options.localPort} ` +
      `after ${attempts} attempts in ${options.deadlineMs} ms (${summary}); the NATs likely do not allow ` +
      'simultaneous open (symmetric mapping?), keep using the relay',
    attempts,
    errors,
  )
}
