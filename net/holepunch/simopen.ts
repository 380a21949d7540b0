/**
 * The punch loop: TCP simultaneous open from a fixed local port.
 *
 * Both peers connect from their punch port to the other's observed endpoint,
 * again and again with a fresh socket and a short timeout, until one attempt
 * connects. The first SYN to leave a NAT opens its mapping; the other side's
 * SYN then matches it and gets through, which completes the handshake on both
 * sides (as a simultaneous open or an ordinary SYN/SYN-ACK). See
 * docs/hole-punching-study.md for why each error is handled as it is.
 */

import net from 'node:net'
import { sleep } from '../../lib/index.ts'
import { HolePunchTimeoutError, PunchPortUnusableError } from './errors.ts'
import type { Endpoint } from './nat.ts'

export interface ConnectFromOptions {
  localPort: number
  /** Bind address; the kernel picks the outgoing interface's when omitted */
  localAddress?: string
  timeoutMs: number
  signal?: AbortSignal
}

export interface SimultaneousOpenOptions {
  localPort: number
  localAddress?: string
  /**
   * Per attempt. Below the kernel's 1 s initial SYN retransmission timeout, so
   * each attempt is exactly one SYN and this loop, not the kernel, sets the
   * pace; above 2 × RTT so a SYN that got through is not abandoned.
   */
  attemptTimeoutMs: number
  /** Pause after a fast failure (a RST: `ECONNREFUSED`) so the loop cannot spin */
  retryDelayMs: number
  deadlineMs: number
  signal?: AbortSignal
}

export interface PunchedSocket {
  socket: net.Socket
  attempts: number
  errors: Record<string, number>
  elapsedMs: number
}

function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code
  return err instanceof Error ? err.name : 'UNKNOWN'
}

const swallow = (): void => {}

/**
 * One connect from `localPort`. libuv sets SO_REUSEADDR on every bind, which
 * is what lets it share the port with the observer connection.
 *
 * The resolved socket keeps a no-op `error` listener: between `connect` and
 * the moment its new owner attaches handlers, an error must not crash the
 * process; the owner still sees it through `close`.
 */
export function connectFrom(target: Endpoint, options: ConnectFromOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted === true) {
      reject(options.signal.reason)
      return
    }
    const socket = net.connect({
      host: target.address,
      port: target.port,
      localPort: options.localPort,
      localAddress: options.localAddress,
    })
    const finish = (err: unknown): void => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      socket.off('connect', onConnect)
      socket.off('error', onError)
      socket.on('error', swallow)
      if (err === undefined) {
        resolve(socket)
        return
      }
      socket.destroy()
      reject(err)
    }
    const onConnect = (): void => finish(undefined)
    const onError = (err: Error): void => finish(err)
    const onAbort = (): void => finish(options.signal?.reason)
    const timer = setTimeout(() => {
      const err = new Error(
        `connect to ${target.address}:${target.port} from :${options.localPort} got no answer in ${options.timeoutMs} ms`,
      )
      finish(Object.assign(err, { code: 'ETIMEDOUT' }))
    }, options.timeoutMs)
    socket.once('connect', onConnect)
    socket.once('error', onError)
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Connect to `target` from `options.localPort` until a connection is
 * established or the deadline passes. Both sides must run this at about the
 * same time.
 *
 * @throws {HolePunchTimeoutError} nothing connected before the deadline
 * @throws {PunchPortUnusableError} the port cannot be bound for this target (not retryable)
 * @throws the signal's reason when aborted
 */
export async function simultaneousOpen(
  target: Endpoint,
  options: SimultaneousOpenOptions,
): Promise<PunchedSocket> {
  const started = Date.now()
  const deadline = started + options.deadlineMs
  const errors: Record<string, number> = {}
  let attempts = 0
  for (let left = options.deadlineMs; left > 0; left = deadline - Date.now()) {
    attempts++
    try {
      const socket = await connectFrom(target, {
        localPort: options.localPort,
        localAddress: options.localAddress,
        timeoutMs: Math.min(options.attemptTimeoutMs, left),
        signal: options.signal,
      })
      return { socket, attempts, errors, elapsedMs: Date.now() - started }
    } catch (err) {
      options.signal?.throwIfAborted()
      const code = errorCode(err)
      if (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL') {
        throw new PunchPortUnusableError(options.localPort, code, { cause: err })
      }
      errors[code] = (errors[code] ?? 0) + 1
      // a timed-out attempt already spent its time; a fast failure is paced
      if (code !== 'ETIMEDOUT') {
        const pause = Math.max(0, Math.min(options.retryDelayMs, deadline - Date.now()))
        await sleep(pause, options.signal)
      }
    }
  }
  throw new HolePunchTimeoutError(target, options.localPort, attempts, errors, Date.now() - started)
}
