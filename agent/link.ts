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
 * lookup, see discovery.ts) supplies fresh ones. When a direct connection to the
 * coordinator appears (punched, on the LAN, dialled) while the session runs
 * relayed, the session moves to it at once (no backoff, no `disconnected`): a new
 * hello re-agrees on reports and the coordinator pushes the desired state again,
 * so nothing is lost; `onPathUpgraded` reports it and the relayed connection closes.
 *
 * It answers the coordinator's pings and, given `diagnose`, its diagnose
 * requests (`fleetmesh doctor <machine>`) at once. Frames of a type this version
 * does not know (a newer coordinator's) are skipped, never a reason to drop the link.
 * A running update's output goes up live (`sendUpdateLog`) only to a coordinator
 * whose hello names UPDATE_LOG_CAPABILITY, in order with the reports. With `coordinators` (failover.ts),
 * each try after a lost session goes to the next coordinator of the fleet's signed list.
 */
import type { Connection } from '@libp2p/interface'
import { errorMessage, FLEETMESH_VERSION, RecoveryBackoff, WakeableSleep } from '../lib/index.ts'
import { connectionPath, isRelayed } from '../net/index.ts'
import {
  COORDINATOR_LIST_CAPABILITY,
  type ControlFrame,
  controlFrameSchema,
  DIAGNOSE_CAPABILITY,
  decodeControlFrame,
  encodeMessage,
  FramedStream,
  isUnknownFrame,
  MAX_ENVELOPE_BYTES,
  PROTOCOLS,
  UPDATE_LOG_CAPABILITY,
  type UpdateLogFrame,
  WIRE_VERSION,
} from '../protocol/index.ts'
import { LinkClosedError, RoundTripTimeoutError } from './link-errors.ts'
import type { LinkInit, LinkState, ReportQueue, RevocationLink } from './link-init.ts'
import { currentTarget } from './link-init.ts'
import {
  closeRelayedTo,
  connectToCoordinator,
  directConnectionTo,
  type LinkPath,
  type PathUpgrade,
} from './link-path.ts'
import { dropDeadRelay } from './relay-check.ts'

export type { LinkInit, LinkState, PathUpgrade, ReportQueue, RevocationLink }
export { LinkClosedError, RoundTripTimeoutError }

export const SOFTWARE = `fleetmesh-agent/${FLEETMESH_VERSION}`

interface Active {
  fs: FramedStream
  lastSent: number
  lastFrameAt: number
  sending: Promise<void>
  /** The coordinator's hello names UPDATE_LOG_CAPABILITY. */
  updateLogs: boolean
}

/** The init fields with a default (the constructor's) */
type Defaulted = 'keepaliveMs' | 'deadAfterMs' | 'backoffInitialMs' | 'backoffMaxMs' | 'dialTimeoutMs'

export class CoordinatorLink {
  readonly #init: LinkInit & Required<Pick<LinkInit, Defaulted>>
  #active: Active | undefined
  /** A session between its stream opening and its hello: stop() must end it too */
  #starting: Active | undefined
  /** Where the current session runs, from its hello on */
  #established: LinkPath | undefined
  /** Where the session being replaced by a direct one ran */
  #moving: LinkPath | undefined
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
    if (this.#loop !== undefined) return
    this.#init.host.addEventListener('connection:open', this.#onConnectionOpen)
    this.#loop = this.#run()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#init.host.removeEventListener('connection:open', this.#onConnectionOpen)
    for (const a of [this.#active, this.#starting]) a?.fs.abort(new LinkClosedError('agent stopping'))
    this.#backoff.wake()
    await this.#loop
  }

  /** Sends whatever is queued and not yet sent on the current stream. */
  flush(): void {
    const a = this.#active
    if (a === undefined) return
    // The queue as it is now, read now: a report queued after a chunk of update output goes out after it.
    const queued = this.#init.queue.pending()
    queued.catch(() => {}) // awaited (and its failure logged) in its turn
    a.sending = a.sending
      .then(() => this.#sendPending(a, queued))
      .catch((err: unknown) => {
        this.#log(`sending reports failed: ${errorMessage(err)}`)
      })
  }

  /**
   * Best effort: a chunk of the running update's output, behind the reports queued
   * before it; dropped while offline, and for a coordinator that does not take them.
   */
  sendUpdateLog(chunk: Omit<UpdateLogFrame, 't'>): void {
    const a = this.#active
    if (a?.updateLogs !== true) return
    a.sending = a.sending.then(() => this.#send(a, { t: 'update-log', ...chunk })).catch(() => {})
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

  /** A direct connection to the coordinator while the session is relayed: move the session to it. */
  readonly #onConnectionOpen = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    if (!conn.remotePeer.equals(this.#target().peer) || isRelayed(conn)) return
    if (this.#established?.path !== 'relayed') return
    this.#log(`a direct connection to the coordinator is up (${conn.remoteAddr})`)
    this.#moveToDirect()
  }

  /** Ends the relayed session; #run then starts the next one on the direct connection. */
  #moveToDirect(): void {
    this.#log('moving the control link to the direct connection')
    this.#active?.fs.abort(new LinkClosedError('control link moving to a direct connection'))
  }

  async #run(): Promise<void> {
    const { backoffInitialMs: initialMs, backoffMaxMs: maxMs } = this.#init
    // for two minutes after a session that worked, retries stay at most 1 s apart: a
    // restarting relay or coordinator is back within seconds (lib/backoff.ts)
    const retry = new RecoveryBackoff({ initialMs, maxMs, quickMaxMs: 1_000, quickForMs: 120_000 })
    while (!this.#stopped) {
      let helloDone = false
      let failure: { error: unknown } | undefined
      try {
        await this.#session(() => {
          helloDone = true
        })
      } catch (error) {
        failure = { error }
      }
      const from = this.#established
      this.#established = undefined
      if (this.#stopped) break
      // A relayed session that ended with a direct connection up (the punch closed the relayed
      // one, or #onConnectionOpen ended it): straight on to the direct one, not a reconnect.
      if (from?.path === 'relayed' && directConnectionTo(this.#init.host, this.#target().peer)) {
        this.#moving = from
        continue
      }
      this.#moving = undefined
      // lost, or never reached: the next try goes to the next coordinator of the fleet's list
      this.#init.coordinators?.next()
      if (failure !== undefined) this.#log(`control link: ${errorMessage(failure.error)}`)
      this.#setState(
        failure === undefined
          ? { connected: false }
          : { connected: false, error: errorMessage(failure.error) },
      )
      if (helloDone) retry.succeeded()
      // After a session that worked (the coordinator restarted, say), full jitter over a
      // short window: the whole fleet reconnects at once, and this spreads it out.
      const delay = helloDone ? initialMs * Math.random() : retry.next()
      await this.#backoff.sleep(delay)
    }
  }

  async #session(onHello: () => void): Promise<void> {
    const { host, dialTimeoutMs } = this.#init
    const { peer: coordinator, addrs: coordinatorAddrs, discover } = this.#target()
    const log = (m: string) => this.#log(m)
    const conn = await connectToCoordinator({
      host,
      coordinator,
      coordinatorAddrs,
      dialTimeoutMs,
      discover,
      log,
    })
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
    const a: Active = {
      fs,
      lastSent: 0,
      lastFrameAt: Date.now(),
      sending: Promise.resolve(),
      updateLogs: false,
    }
    // stop() may have come while this session was dialling or before its hello
    this.#starting = a
    if (this.#stopped) fs.abort(new LinkClosedError('agent stopping'))
    const keepalive = setInterval(() => {
      if (Date.now() - a.lastFrameAt > this.#init.deadAfterMs) {
        clearInterval(keepalive)
        this.#log(`no frame from the coordinator for ${this.#init.deadAfterMs} ms; dropping the connection`)
        const dead = new LinkClosedError('keepalive timeout: path to the coordinator is dead')
        fs.abort(dead)
        // Abort (not close: a graceful close waits on the dead path) so the
        // next dial cannot pick this connection again.
        conn.abort(dead)
        if (path === 'relayed')
          void dropDeadRelay(this.#init.host, conn, this.#init.keepaliveMs, (m) => this.#log(m))
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
        capabilities: [
          'profile',
          ...(this.#init.diagnose ? [DIAGNOSE_CAPABILITY] : []),
          ...(this.#init.onCoordinators ? [COORDINATOR_LIST_CAPABILITY] : []),
        ],
        machine: this.#init.machine,
        ...(this.#init.revocations ? { revocations: this.#init.revocations.head() } : {}),
      })
      const hello = await this.#read(a)
      if (hello === undefined) throw new LinkClosedError('coordinator closed the control stream')
      if (hello.t === 'error')
        throw new LinkClosedError(`coordinator refused: ${hello.error.code}: ${hello.error.message}`)
      if (hello.t !== 'hello')
        throw new LinkClosedError(`expected hello from the coordinator, got ${hello.t}`)
      a.updateLogs = hello.capabilities.includes(UPDATE_LOG_CAPABILITY)
      if (hello.lastAckedSeq !== undefined) await this.#agreeOnNumbering(hello.lastAckedSeq)
      for (const entries of (await this.#init.revocations?.hello(hello.revocations)) ?? [])
        await this.#send(a, { t: 'revocations', entries })
      this.#active = a
      this.#starting = undefined
      onHello()
      this.#arrived({ path, addr: conn.remoteAddr.toString() })
      for (const w of this.#connectedWaiters.splice(0)) w()
      this.flush()
      // round trips asked on the session this one replaced: their pongs went with it
      for (const nonce of this.#pongs.keys()) void this.#send(a, { t: 'ping', nonce }).catch(() => {})
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
          case 'coordinators':
            await this.#init.onCoordinators?.(frame.envelope)
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
      if (this.#starting === a) this.#starting = undefined
      if (fs.stream.status === 'open') fs.abort(new LinkClosedError('control session ended'))
    }
  }

  /** The session is up at `here`: says so, and where it moved from if it did. */
  #arrived(here: LinkPath): void {
    const from = this.#moving
    this.#moving = undefined
    this.#established = here
    if (from !== undefined && here.path === 'direct') this.#init.onPathUpgraded?.({ from, to: here })
    this.#setState({ connected: true, ...here })
    if (here.path === 'direct') closeRelayedTo(this.#init.host, this.#target().peer)
    // one opened while this session said hello: #onConnectionOpen did not act on it
    else if (directConnectionTo(this.#init.host, this.#target().peer)) this.#moveToDirect()
  }

  async #sendPending(a: Active, queued: ReturnType<ReportQueue['pending']>): Promise<void> {
    for (const { seq, envelope } of await queued) {
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
    const { acked, renumbered } = await queue.reconcile(stored)
    // reports it already holds (their ack went with an earlier session) are acknowledged like any other
    if (acked > 0) await queue.ack(stored)
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

  /** The coordinator dialed now */
  #target() {
    return currentTarget(this.#init)
  }

  #setState(state: LinkState): void {
    this.#init.onState?.(state)
  }

  #log(msg: string): void {
    this.#init.log?.(msg)
  }
}
