/**
 * The client side of the observer: learn our external endpoint as seen from
 * the public side, from the punch port, and keep that NAT mapping alive.
 *
 * {@link NatObserver} connects from the punch port to every configured
 * observer, classifies the NAT from their answers, keeps the first observer's
 * connection open (the mapping outlives no flow on NATs with a real mapping
 * table; see docs/hole-punching-study.md) and asks it again every
 * `reprobeIntervalMs`, which is both the keepalive and a cheap re-probe. A
 * changed answer or a lost connection triggers a full probe.
 */

import type net from 'node:net'
import type { Logger } from '@libp2p/interface'
import { z } from 'zod'
import { ObserverResponseError, ObserverUnreachableError } from './errors.ts'
import { type KeepaliveStatus, KeepaliveTuner } from './keepalive.ts'
import {
  classifyNat,
  type Endpoint,
  formatEndpoint,
  type NatKind,
  plainAddress,
  sameEndpoint,
} from './nat.ts'
import { OBSERVED_LINE_TYPE } from './observer-server.ts'
import { connectFrom } from './simopen.ts'

/** An answer line is ~60 bytes; anything much longer is not an observer */
const MAX_LINE_BYTES = 512

const observedLine = z.object({
  type: z.literal(OBSERVED_LINE_TYPE),
  address: z.ipv4(),
  port: z.number().int().min(1).max(65_535),
})

export interface ObserveOptions {
  localPort: number
  localAddress?: string
  timeoutMs: number
  signal?: AbortSignal
}

/** An open connection from the punch port to one observer */
export class ObserverConnection {
  readonly observer: Endpoint
  readonly local: Endpoint
  readonly #socket: net.Socket
  readonly #name: string
  #buffer = ''
  readonly #lines: string[] = []
  #waiter: PromiseWithResolvers<string> | undefined
  #asking: Promise<Endpoint> | undefined
  #failure: Error | undefined

  constructor(observer: Endpoint, socket: net.Socket) {
    this.observer = observer
    this.#name = formatEndpoint(observer)
    this.#socket = socket
    this.local = { address: plainAddress(socket.localAddress), port: socket.localPort ?? 0 }
    socket.setNoDelay(true)
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => this.#onData(chunk))
    socket.on('error', (err) =>
      this.#fail(new ObserverUnreachableError(this.#name, err.message, { cause: err })),
    )
    socket.on('close', () =>
      this.#fail(new ObserverUnreachableError(this.#name, 'the observer closed the connection')),
    )
  }

  get closed(): boolean {
    return this.#failure !== undefined || this.#socket.destroyed
  }

  /** The next answer line, parsed */
  async next(timeoutMs: number, signal?: AbortSignal): Promise<Endpoint> {
    const line = await this.#nextLine(timeoutMs, signal)
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch {
      throw this.#protocolError('not JSON')
    }
    const parsed = observedLine.safeParse(value)
    if (!parsed.success) throw this.#protocolError(parsed.error.issues[0]?.message ?? 'wrong shape')
    return { address: parsed.data.address, port: parsed.data.port }
  }

  /**
   * Ask again on the same connection: keeps the mapping alive and reports it.
   * A keepalive and an on-demand probe may ask at once; they share one answer.
   */
  ask(timeoutMs: number, signal?: AbortSignal): Promise<Endpoint> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    if (this.#asking !== undefined) return this.#asking
    // stale answers (none are expected) would be taken for this one
    this.#lines.length = 0
    this.#socket.write('\n')
    const asking = this.next(timeoutMs, signal).finally(() => {
      if (this.#asking === asking) this.#asking = undefined
    })
    this.#asking = asking
    return asking
  }

  /**
   * Drop the connection with a RST rather than a FIN: an active close would
   * leave the 4-tuple in TIME_WAIT, and the next probe reuses exactly that tuple.
   */
  close(): void {
    this.#fail(new ObserverUnreachableError(this.#name, 'connection closed locally'))
    if (!this.#socket.destroyed) this.#socket.resetAndDestroy()
  }

  #protocolError(detail: string): ObserverResponseError {
    const err = new ObserverResponseError(this.#name, detail)
    this.#fail(err)
    this.close()
    return err
  }

  #nextLine(timeoutMs: number, signal?: AbortSignal): Promise<string> {
    const line = this.#lines.shift()
    if (line !== undefined) return Promise.resolve(line)
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    if (this.#waiter !== undefined)
      return Promise.reject(new Error('ObserverConnection allows one reader at a time'))
    const waiter = Promise.withResolvers<string>()
    this.#waiter = waiter
    const timer = setTimeout(
      () => waiter.reject(new ObserverUnreachableError(this.#name, `no answer within ${timeoutMs} ms`)),
      timeoutMs,
    )
    const onAbort = (): void => waiter.reject(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    return waiter.promise.finally(() => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      if (this.#waiter === waiter) this.#waiter = undefined
    })
  }

  #onData(chunk: string): void {
    this.#buffer += chunk
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n')) {
      const line = this.#buffer.slice(0, nl)
      this.#buffer = this.#buffer.slice(nl + 1)
      // taken at once: a second line in the same chunk must not go to a settled waiter
      const waiter = this.#waiter
      this.#waiter = undefined
      if (waiter !== undefined) waiter.resolve(line)
      else this.#lines.push(line)
    }
    if (this.#buffer.length > MAX_LINE_BYTES || this.#lines.length > 4) {
      this.#protocolError(`more than ${MAX_LINE_BYTES} bytes without a newline, or unasked answers`)
    }
  }

  #fail(err: Error): void {
    this.#failure ??= err
    const waiter = this.#waiter
    this.#waiter = undefined
    waiter?.reject(this.#failure)
  }
}

/** Connect from the punch port to `observer` and read what it saw */
export async function observe(
  observer: Endpoint,
  options: ObserveOptions,
): Promise<{ connection: ObserverConnection; observed: Endpoint }> {
  let socket: net.Socket
  try {
    socket = await connectFrom(observer, options)
  } catch (err) {
    options.signal?.throwIfAborted()
    const detail = err instanceof Error ? err.message : String(err)
    throw new ObserverUnreachableError(formatEndpoint(observer), detail, { cause: err })
  }
  const connection = new ObserverConnection(observer, socket)
  try {
    return { connection, observed: await connection.next(options.timeoutMs, options.signal) }
  } catch (err) {
    connection.close()
    throw err
  }
}

export interface ObserverResult {
  /** `address:port` of the observer */
  observer: string
  /** What it saw, when it answered */
  observed?: Endpoint
  /** `name: message` of the failure, when it did not */
  error?: string
}

export interface NatObservation {
  natKind: NatKind
  /** Our external endpoint as the first answering observer saw it */
  observed?: Endpoint
  /** Our socket's own endpoint (private address and punch port) */
  local?: Endpoint
  observers: ObserverResult[]
  /** When this was probed (ms since the epoch); 0 before the first probe */
  at: number
}

export interface NatObserverInit {
  observers: readonly Endpoint[]
  localPort: number
  localAddress?: string
  /** Per observer connect and per answer */
  timeoutMs: number
  /** How often the kept connection is asked again (keepalive + re-probe) */
  reprobeIntervalMs: number
  log: Logger
  onChange?: (observation: NatObservation) => void
}

interface Kept {
  index: number
  connection: ObserverConnection
}

type ProbeResult =
  | { index: number; connection: ObserverConnection; observed: Endpoint }
  | { index: number; error: unknown }

/** Keeps an up-to-date {@link NatObservation} for the punch port */
export class NatObserver {
  readonly #init: NatObserverInit
  #current: NatObservation
  #kept: Kept | undefined
  #probing: Promise<NatObservation> | undefined
  readonly #first = Promise.withResolvers<NatObservation>()
  #timer: NodeJS.Timeout | undefined
  readonly #stopping = new AbortController()
  readonly #keepalive: KeepaliveTuner
  /** When the kept connection last carried an answer: the mapping's idle time starts there */
  #lastAnswer = 0

  constructor(init: NatObserverInit) {
    this.#init = init
    this.#current = { natKind: 'unknown', observers: [], at: 0 }
    this.#keepalive = new KeepaliveTuner(init.reprobeIntervalMs)
  }

  get current(): NatObservation {
    return this.#current
  }

  /** The keepalive interval in force and what it was learned from (keepalive.ts) */
  get keepalive(): KeepaliveStatus {
    return this.#keepalive.status()
  }

  start(): void {
    if (this.#init.observers.length === 0) {
      this.#current = { natKind: 'unknown', observers: [], at: Date.now() }
      this.#first.resolve(this.#current)
      return
    }
    void this.probe().catch(() => {})
    this.#schedule()
  }

  /** The next keepalive, after the interval in force now (it shrinks when a mapping is lost) */
  #schedule(): void {
    if (this.#stopping.signal.aborted) return
    this.#timer = setTimeout(
      () => void this.#tick().finally(() => this.#schedule()),
      this.#keepalive.intervalMs,
    )
    // keepalive only; it must not hold the process open
    this.#timer.unref()
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#stopping.abort(new Error('NAT observer stopped'))
    this.#kept?.connection.close()
    this.#kept = undefined
    this.#first.resolve(this.#current)
  }

  /** The first probe's result (or the current one once there was a probe) */
  async ready(timeoutMs: number): Promise<NatObservation> {
    const timer = new Promise<NatObservation>((resolve) => {
      setTimeout(() => resolve(this.#current), timeoutMs).unref()
    })
    return Promise.race([this.#first.promise, timer])
  }

  /** A full probe of every observer; concurrent calls share one probe */
  probe(): Promise<NatObservation> {
    this.#probing ??= this.#probeAll().finally(() => {
      this.#probing = undefined
    })
    return this.#probing
  }

  async #tick(): Promise<void> {
    if (this.#probing !== undefined) return
    const kept = this.#kept
    if (kept === undefined || kept.connection.closed) {
      await this.probe().catch(() => {})
      return
    }
    const idleMs = Date.now() - this.#lastAnswer
    try {
      const observed = await kept.connection.ask(this.#init.timeoutMs, this.#stopping.signal)
      if (sameEndpoint(observed, this.#current.observed)) {
        this.#current = { ...this.#current, at: Date.now() }
        this.#lastAnswer = Date.now()
        this.#keepalive.held()
        return
      }
      this.#mappingLost(idleMs)
      this.#init.log(
        'observer %s now sees %s, was %s: probing again',
        formatEndpoint(kept.connection.observer),
        formatEndpoint(observed),
        this.#current.observed === undefined ? 'nothing' : formatEndpoint(this.#current.observed),
      )
    } catch (err) {
      if (this.#stopping.signal.aborted) return
      this.#init.log('kept observer connection failed, probing again - %e', err)
      const fresh = await this.probe().catch(() => undefined)
      // the observer answers a fresh connection: it was the NAT that forgot the kept one
      if (fresh?.observed !== undefined) this.#mappingLost(idleMs)
      return
    }
    await this.probe().catch(() => {})
  }

  #mappingLost(idleMs: number): void {
    const before = this.#keepalive.intervalMs
    const after = this.#keepalive.lost(idleMs)
    if (after !== before)
      this.#init.log(
        'NAT mapping lost after %d ms idle: keepalive every %d ms, was %d ms',
        idleMs,
        after,
        before,
      )
  }

  async #probeOne(index: number, observer: Endpoint): Promise<ProbeResult> {
    const { timeoutMs, localPort, localAddress } = this.#init
    const signal = this.#stopping.signal
    const kept = this.#kept
    if (kept?.index === index && !kept.connection.closed) {
      try {
        return { index, connection: kept.connection, observed: await kept.connection.ask(timeoutMs, signal) }
      } catch {
        // the tuple is free again after close(); fall through to a fresh connection
        kept.connection.close()
      }
    }
    try {
      const { connection, observed } = await observe(observer, { localPort, localAddress, timeoutMs, signal })
      return { index, connection, observed }
    } catch (error) {
      return { index, error }
    }
  }

  async #probeAll(): Promise<NatObservation> {
    const results = await Promise.all(this.#init.observers.map((o, i) => this.#probeOne(i, o)))
    const answered = results.filter((r) => 'connection' in r)
    const keep = answered[0]
    for (const r of answered) if (r !== keep) r.connection.close()
    if (this.#kept !== undefined && this.#kept.connection !== keep?.connection) this.#kept.connection.close()
    if (this.#stopping.signal.aborted) {
      keep?.connection.close()
      return this.#current
    }
    this.#kept = keep === undefined ? undefined : { index: keep.index, connection: keep.connection }
    if (keep !== undefined) this.#lastAnswer = Date.now()
    const observation: NatObservation = {
      natKind: classifyNat(answered.map((r) => ({ local: r.connection.local, observed: r.observed }))),
      observed: keep?.observed,
      local: keep?.connection.local,
      observers: results.map((r) => {
        const observer = formatEndpoint(this.#init.observers[r.index] ?? { address: '?', port: 0 })
        if ('connection' in r) return { observer, observed: r.observed }
        const e = r.error
        return { observer, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) }
      }),
      at: Date.now(),
    }
    const changed =
      observation.natKind !== this.#current.natKind ||
      !sameEndpoint(observation.observed, this.#current.observed)
    this.#current = observation
    this.#first.resolve(observation)
    if (changed) {
      this.#init.log(
        'NAT %s, external endpoint %s (observers: %s)',
        observation.natKind,
        observation.observed === undefined ? 'unknown' : formatEndpoint(observation.observed),
        observation.observers
          .map((o) => `${o.observer}=${o.observed === undefined ? o.error : formatEndpoint(o.observed)}`)
          .join(' '),
      )
      this.#init.onChange?.(observation)
    }
    return observation
  }
}
