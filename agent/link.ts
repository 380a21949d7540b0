/**
 * The agent's connection keeper: holds one control stream to the coordinator,
 * reconnecting with jittered exponential backoff, and detects a dead path with an
 * application-level keepalive (a NAT that silently dropped its mapping shows no
 * error until a write times out, which takes TCP many minutes).
 *
 * On every (re)connect it sends hello, drops queued reports the coordinator says
 * it already stored, and sends the rest in order. Manifests pushed by the
 * coordinator are handed to `onManifest`. With `revocations`, the hello names the
 * head of the agent's revocation list and the coordinator's answer names its own;
 * the entries the coordinator sends (before any manifest) are stored before the
 * next frame is read, so a manifest is never checked against an older list.
 *
 * The connection may be direct or relayed (a coordinator behind NAT is reached
 * as `<relay>/p2p-circuit/p2p/<coordinator>`); relayed connections are
 * "limited" in libp2p terms, so the control stream opts in with
 * `runOnLimitedConnection`. When no known address works, `discover` (a DHT
 * lookup, see discovery.ts) supplies fresh ones.
 *
 * It answers the coordinator's pings and, given `diagnose`, its diagnose
 * requests (`fleetmesh doctor <machine>`) at once. Frames of a type this version
 * does not know (a newer coordinator's) are skipped, never a reason to drop the link.
 */
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { backoffDelay, errorMessage, FLEETMESH_VERSION, WakeableSleep } from '../lib/index.ts'
import { connectionPath, type FleetHost, openConnectionTo } from '../net/index.ts'
import {
  type AgentDiagnosis,
  type ConnectionPath,
  type ControlFrame,
  controlFrameSchema,
  DIAGNOSE_CAPABILITY,
  decodeControlFrame,
  encodeMessage,
  FramedStream,
  isUnknownFrame,
  MAX_ENVELOPE_BYTES,
  PROTOCOLS,
  type RevocationHead,
  WIRE_VERSION,
} from '../protocol/index.ts'

export const SOFTWARE = `fleetmesh-agent/${FLEETMESH_VERSION}`

export interface ReportQueue {
  pending(): Promise<{ seq: number; envelope: Uint8Array }[]>
  ack(seq: number): Promise<void>
  /**
   * On connect, given the highest report seq the coordinator stored: drops what
   * it has, or renumbers the queue above it when the agent's numbering went back
   * (Outbox.reconcile). Without it, the reports up to that seq are acknowledged.
   */
  reconcile?(stored: number): Promise<{ acked: number; renumbered: number }>
}

/** The agent's revocation list as the link needs it (agent/revocations.ts). */
export interface RevocationLink {
  head(): RevocationHead
  /** The coordinator's head (undefined: it keeps no signed list); resolves with entries to send it, in frames. */
  hello(theirs: RevocationHead | undefined): Promise<Uint8Array[][]>
  /** Entries from the coordinator; resolves once they are stored. */
  receive(entries: Uint8Array[]): Promise<void>
}

export interface LinkInit {
  host: FleetHost
  coordinator: PeerId
  coordinatorAddrs: Multiaddr[]
  machine: string
  queue: ReportQueue
  onManifest: (envelope: Uint8Array) => void
  /** Ping interval. */
  keepaliveMs?: number
  /** No frame from the coordinator for this long means the path is dead. */
  deadAfterMs?: number
  backoffInitialMs?: number
  backoffMaxMs?: number
  /** Budget for dialing the coordinator, and again for dialing what `discover` found. */
  dialTimeoutMs?: number
  /**
   * Looks the coordinator up when dialing its known addresses fails; resolves
   * with the addresses found (already in the peer store) or rejects.
   */
  discover?: (signal: AbortSignal) => Promise<Multiaddr[]>
  /**
   * This agent's diagnosis of its network, for the coordinator's `diagnose`
   * requests; without it the hello does not offer the capability.
   */
  diagnose?: () => AgentDiagnosis
  revocations?: RevocationLink
  /** A signed tag record from the coordinator; resolves once it is taken or refused, before the next frame is read. */
  onTags?: (envelope: Uint8Array) => Promise<void>
  log?: (msg: string) => void
  onState?: (state: LinkState) => void
}

export type LinkState =
  | { connected: true; path: ConnectionPath; addr: string }
  | { connected: false; error?: string }

export class LinkClosedError extends Error {
  override name = 'LinkClosedError'
}

export class RoundTripTimeoutError extends Error {
  override name = 'RoundTripTimeoutError'
}

interface Active {
  fs: FramedStream
  lastSent: number
  lastFrameAt: number
  sending: Promise<void>
}

export class CoordinatorLink {
  readonly #init: Required<
    Omit<LinkInit, 'log' | 'onState' | 'discover' | 'diagnose' | 'revocations' | 'onTags'>
  > &
    Pick<LinkInit, 'log' | 'onState' | 'discover' | 'diagnose' | 'revocations' | 'onTags'>
  #active: Active | undefined
  #stopped = false
  #loop: Promise<void> | undefined
  #nonce = 0
  readonly #pongs = new Map<number, () => void>()
  readonly #backoff = new WakeableSleep()
  #connectedWaiters: (() => void)[] = []

  constructor(init: LinkInit) {
    this.#init = {
      keepaliveMs: 10_000,
      deadAfterMs: 25_000,
      backoffInitialMs: 250,
      backoffMaxMs: 30_000,
      dialTimeoutMs: 20_000,
      ...init,
    }
  }

  get connected(): boolean {
    return this.#active !== undefined
  }

  start(): void {
    this.#loop ??= this.#run()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#active?.fs.abort(new LinkClosedError('agent stopping'))
    this.#backoff.wake()
    await this.#loop
  }

  /** Sends whatever is queued and not yet sent on the current stream. */
  flush(): void {
    const a = this.#active
    if (a === undefined) return
    a.sending = a.sending
      .then(() => this.#sendPending(a))
      .catch((err: unknown) => {
        this.#log(`sending reports failed: ${errorMessage(err)}`)
      })
  }

  /** Resolves once connected (or immediately if already). */
  whenConnected(signal?: AbortSignal): Promise<void> {
    if (this.#active !== undefined) return Promise.resolve()
    return new Promise((resolve, reject) => {
      this.#connectedWaiters.push(resolve)
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true })
    })
  }

  /**
   * A fresh authenticated round trip to the coordinator (ping → pong on the
   * Noise-authenticated control stream). Used to confirm an update: if the new
   * generation broke networking, this fails and the agent rolls back.
   */
  async roundTrip(timeoutMs: number): Promise<void> {
    const signal = AbortSignal.timeout(timeoutMs)
    await this.whenConnected(signal).catch(() => {
      throw new RoundTripTimeoutError(`no connection to the coordinator within ${timeoutMs} ms`)
    })
    const a = this.#active
    if (a === undefined) throw new RoundTripTimeoutError('connection lost')
    const nonce = ++this.#nonce
    const pong = new Promise<void>((resolve, reject) => {
      this.#pongs.set(nonce, resolve)
      signal.addEventListener(
        'abort',
        () => reject(new RoundTripTimeoutError(`coordinator did not answer within ${timeoutMs} ms`)),
        { once: true },
      )
    })
    try {
      await this.#send(a, { t: 'ping', nonce })
      await pong
    } finally {
      this.#pongs.delete(nonce)
    }
  }

  async #run(): Promise<void> {
    let attempt = 0
    while (!this.#stopped) {
      let helloDone = false
      try {
        await this.#session(() => {
          helloDone = true
          attempt = 0
        })
        this.#setState({ connected: false })
      } catch (err) {
        if (this.#stopped) break
        this.#log(`control link: ${errorMessage(err)}`)
        this.#setState({ connected: false, error: errorMessage(err) })
      }
      if (this.#stopped) break
      if (!helloDone) attempt++
      // After a session that worked (the coordinator restarted, say), full jitter over a
      // short window: the whole fleet reconnects at once, and this spreads it out.
      const { backoffInitialMs: initialMs, backoffMaxMs: maxMs } = this.#init
      const delay = helloDone ? initialMs * Math.random() : backoffDelay(attempt, { initialMs, maxMs })
      await this.#backoff.sleep(delay)
    }
  }

  async #session(onHello: () => void): Promise<void> {
    const conn = await this.#connect()
    const path = connectionPath(conn)
    let stream: Awaited<ReturnType<Connection['newStream']>>
    try {
      stream = await conn.newStream(PROTOCOLS.control, {
        signal: AbortSignal.timeout(this.#init.dialTimeoutMs),
        runOnLimitedConnection: true,
      })
    } catch (err) {
      // a connection that cannot even open a stream is not worth reusing
      conn.abort(err as Error)
      throw err
    }
    const fs = new FramedStream(stream, { maxFrameBytes: MAX_ENVELOPE_BYTES + 4096 })
    const a: Active = { fs, lastSent: 0, lastFrameAt: Date.now(), sending: Promise.resolve() }
    const keepalive = setInterval(() => {
      if (Date.now() - a.lastFrameAt > this.#init.deadAfterMs) {
        clearInterval(keepalive)
        this.#log(`no frame from the coordinator for ${this.#init.deadAfterMs} ms; dropping the connection`)
        const dead = new LinkClosedError('keepalive timeout: path to the coordinator is dead')
        fs.abort(dead)
        // Abort (not close: a graceful close waits on the dead path) so the
        // next dial cannot pick this connection again.
        conn.abort(dead)
        if (path === 'relayed') void this.#checkRelay(conn)
        return
      }
      void this.#send(a, { t: 'ping', nonce: ++this.#nonce }).catch(() => {})
    }, this.#init.keepaliveMs)
    try {
      await this.#send(a, {
        t: 'hello',
        wire: WIRE_VERSION,
        role: 'agent',
        software: SOFTWARE,
        capabilities: ['profile', ...(this.#init.diagnose ? [DIAGNOSE_CAPABILITY] : [])],
        machine: this.#init.machine,
        ...(this.#init.revocations ? { revocations: this.#init.revocations.head() } : {}),
      })
      const hello = await this.#read(a)
      if (hello === undefined) throw new LinkClosedError('coordinator closed the control stream')
      if (hello.t === 'error')
        throw new LinkClosedError(`coordinator refused: ${hello.error.code}: ${hello.error.message}`)
      if (hello.t !== 'hello')
        throw new LinkClosedError(`expected hello from the coordinator, got ${hello.t}`)
      if (hello.lastAckedSeq !== undefined) await this.#agreeOnNumbering(hello.lastAckedSeq)
      for (const entries of (await this.#init.revocations?.hello(hello.revocations)) ?? [])
        await this.#send(a, { t: 'revocations', entries })
      this.#active = a
      onHello()
      this.#setState({ connected: true, path, addr: conn.remoteAddr.toString() })
      for (const w of this.#connectedWaiters.splice(0)) w()
      this.flush()
      while (true) {
        const frame = await this.#read(a)
        if (frame === undefined) return
        switch (frame.t) {
          case 'manifest':
            this.#init.onManifest(frame.envelope)
            break
          case 'revocations':
            await this.#init.revocations?.receive(frame.entries)
            break
          case 'machine-tags':
            // awaited: a manifest after it is checked against the tags it gives
            await this.#init.onTags?.(frame.envelope)
            break
          case 'ack':
            await this.#init.queue.ack(frame.seq)
            break
          case 'pong':
            this.#pongs.get(frame.nonce)?.()
            break
          case 'ping':
            await this.#send(a, { t: 'pong', nonce: frame.nonce })
            break
          case 'diagnose':
            await this.#answerDiagnose(a, frame.nonce)
            break
          case 'error':
            throw new LinkClosedError(`coordinator error: ${frame.error.code}: ${frame.error.message}`)
          default:
            throw new LinkClosedError(`unexpected "${frame.t}" frame from the coordinator`)
        }
      }
    } finally {
      clearInterval(keepalive)
      if (this.#active === a) this.#active = undefined
      if (fs.stream.status === 'open') fs.abort(new LinkClosedError('control session ended'))
    }
  }

  /**
   * A connection to the coordinator: an open one if there is any (a relayed
   * one too: libp2p's own dial would skip it and open a second), else a dial
   * to the known addresses, else a dial to what `discover` finds.
   */
  async #connect(): Promise<Connection> {
    const { host, coordinator, coordinatorAddrs, dialTimeoutMs, discover } = this.#init
    const reuse = openConnectionTo(host, coordinator)
    if (reuse !== undefined) return reuse
    if (coordinatorAddrs.length > 0) await host.peerStore.merge(coordinator, { multiaddrs: coordinatorAddrs })
    let dialError: Error
    try {
      return await host.dial(coordinator, { signal: AbortSignal.timeout(dialTimeoutMs) })
    } catch (err) {
      if (discover === undefined) throw err
      dialError = err as Error
    }
    let found: Multiaddr[]
    try {
      found = await discover(AbortSignal.timeout(dialTimeoutMs))
    } catch (err) {
      throw new LinkClosedError(
        `cannot reach the coordinator (${dialError.message}) and looking it up failed: ${errorMessage(err)}`,
      )
    }
    this.#log(`looked the coordinator up: ${found.map((a) => a.toString()).join(', ')}`)
    return await host.dial(coordinator, { signal: AbortSignal.timeout(dialTimeoutMs) })
  }

  /**
   * After a relayed session died: if our connection to the relay itself is
   * dead (our NAT dropped its mapping), abort it, or the next relayed dial would
   * reuse it and hang until libp2p's connection monitor notices.
   */
  async #checkRelay(relayed: Connection): Promise<void> {
    const { host, keepaliveMs } = this.#init
    const [relayPart] = relayed.remoteAddr.toString().split('/p2p-circuit')
    const relayId = multiaddr(relayPart ?? '')
      .getComponents()
      .findLast((c) => c.name === 'p2p')?.value
    if (relayId === undefined) return
    const relay = peerIdFromString(relayId)
    const open = () =>
      host.getConnections(relay).filter((c) => c.status === 'open' && connectionPath(c) === 'direct')
    if (open().length === 0) return
    try {
      await host.services.ping.ping(relay, { signal: AbortSignal.timeout(keepaliveMs) })
    } catch (err) {
      this.#log(`relay ${relayId} does not answer either; dropping the connection to it`)
      for (const c of open()) c.abort(err as Error)
    }
  }

  async #sendPending(a: Active): Promise<void> {
    for (const { seq, envelope } of await this.#init.queue.pending()) {
      if (seq <= a.lastSent || this.#active !== a) continue
      await this.#send(a, { t: 'status', envelope })
      a.lastSent = seq
    }
  }

  /** The coordinator's hello says the highest report seq it stored; numbering continues above it. */
  async #agreeOnNumbering(stored: number): Promise<void> {
    const { queue } = this.#init
    if (queue.reconcile === undefined) {
      if (stored > 0) await queue.ack(stored)
      return
    }
    const { renumbered } = await queue.reconcile(stored)
    if (renumbered > 0)
      this.#log(
        `the coordinator has reports up to seq ${stored} but this agent's numbering was behind (outbox/next-seq.json lost?); ` +
          `${renumbered} queued reports renumbered above it`,
      )
  }

  async #send(a: Active, frame: ControlFrame): Promise<void> {
    await a.fs.send(encodeMessage(controlFrameSchema, frame))
  }

  /**
   * Sends this agent's diagnosis. A diagnosis that cannot be sent is logged, not
   * fatal: the coordinator's request times out, and the link stays up.
   */
  async #answerDiagnose(a: Active, nonce: number): Promise<void> {
    if (this.#init.diagnose === undefined) return
    let frame: Uint8Array
    try {
      frame = encodeMessage(controlFrameSchema, { t: 'diagnosis', nonce, report: this.#init.diagnose() })
    } catch (err) {
      this.#log(`cannot answer the coordinator's diagnose request: ${errorMessage(err)}`)
      return
    }
    await a.fs.send(frame)
  }

  /** The next frame of a type this version knows; a newer coordinator's other frames are skipped. */
  async #read(a: Active): Promise<ControlFrame | undefined> {
    while (true) {
      const bytes = await a.fs.read()
      if (bytes === undefined) return undefined
      a.lastFrameAt = Date.now()
      const frame = decodeControlFrame(bytes, MAX_ENVELOPE_BYTES + 4096)
      if (!isUnknownFrame(frame)) return frame
      this.#log(
        `ignoring a "${frame.unknown}" frame from the coordinator: a newer version's, unknown to this agent`,
      )
    }
  }

  #setState(state: LinkState): void {
    this.#init.onState?.(state)
  }

  #log(msg: string): void {
    this.#init.log?.(msg)
  }
}
