/**
 * The hole-punching service: watches for relayed connections, coordinates a
 * punch with the peer over them, upgrades the punched socket and closes the
 * relayed connection. See index.ts for the policy, api.ts for the options,
 * settings.ts for their defaults and punch.ts for the punch itself.
 */

import type { Connection, Logger, PeerId, Startable, Stream } from '@libp2p/interface'
import { serviceCapabilities } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { sleep } from '../../lib/index.ts'
import { FramedStream } from '../../protocol/index.ts'
import { isRelayed } from '../host.ts'
import type {
  HolePunchComponents,
  HolePunchEvents,
  HolePunchInit,
  HolePunchService,
  HolePunchStatus,
  PunchAttempt,
  PunchOptions,
} from './api.ts'
import { AttemptBook, describeAttempt, type Outcome, type Progress } from './attempts.ts'
import { type Answer, answerPunch, localOffer, type PunchOffer, proposePunch } from './coordination.ts'
import {
  errorInfo,
  HolePunchRefusedError,
  HolePunchSkippedError,
  NoRelayedConnectionError,
  type SkipReason,
} from './errors.ts'
import { HOLEPUNCH_PROTOCOL, MAX_HOLEPUNCH_MESSAGE_BYTES } from './messages.ts'
import { formatEndpoint } from './nat.ts'
import { type NatObservation, NatObserver } from './observer-client.ts'
import { type PunchSetup, punchAndUpgrade } from './punch.ts'
import { pickPunchPort } from './punch-port.ts'
import { type HolePunchSettings, holePunchSettings } from './settings.ts'
import { isUpgradeInitiator } from './upgrade.ts'

/** Per-peer status entries kept for `status()` */
const MAX_TRACKED_PEERS = 1024

interface InFlight {
  role: 'initiator' | 'responder'
  promise: Promise<Connection>
}

type Trigger = PunchAttempt['trigger']

export class HolePunch implements HolePunchService, Startable {
  readonly [Symbol.toStringTag] = '@fleetmesh/holepunch'
  readonly [serviceCapabilities]: string[] = ['@fleetmesh/holepunch']

  readonly #components: HolePunchComponents
  readonly #settings: HolePunchSettings
  readonly #log: Logger
  readonly #events = new EventTarget()
  readonly #inflight = new Map<string, InFlight>()
  readonly #book: AttemptBook
  #port: number
  #observer: NatObserver | undefined
  #shutdown = new AbortController()
  #started = false
  readonly #retries = new Set<ReturnType<typeof setTimeout>>()
  readonly #listening = (): Multiaddr[] => this.#components.transportManager?.getAddrs() ?? []

  constructor(components: HolePunchComponents, init: HolePunchInit = {}) {
    this.#components = components
    this.#settings = holePunchSettings(init)
    this.#port = this.#settings.punchPort
    this.#log = components.logger.forComponent('fleetmesh:holepunch')
    this.#book = new AttemptBook({
      backoffMs: this.#settings.backoffMs,
      maxBackoffMs: this.#settings.maxBackoffMs,
      maxPeers: MAX_TRACKED_PEERS,
    })
  }

  async start(): Promise<void> {
    this.#shutdown = new AbortController()
    if (this.#port === 0) this.#port = await pickPunchPort(this.#settings.localAddress)
    await this.#components.registrar.handle(HOLEPUNCH_PROTOCOL, this.#onStream, {
      // coordination only ever happens on relayed connections
      runOnLimitedConnection: true,
      maxInboundStreams: 4,
      maxOutboundStreams: 4,
    })
    this.#components.events.addEventListener('connection:open', this.#onConnectionOpen)
    if (this.#settings.enabled) {
      this.#observer = new NatObserver({
        observers: this.#settings.observers,
        localPort: this.#port,
        localAddress: this.#settings.localAddress,
        timeoutMs: this.#settings.observeTimeoutMs,
        reprobeIntervalMs: this.#settings.reprobeIntervalMs,
        log: this.#log,
        onChange: (observation) => this.#emit('observation', observation),
      })
      this.#observer.start()
    }
    this.#started = true
    this.#log(
      'punch port %d, observers %s',
      this.#port,
      this.#settings.observers.map(formatEndpoint).join(', ') || 'none',
    )
  }

  async stop(): Promise<void> {
    this.#started = false
    this.#components.events.removeEventListener('connection:open', this.#onConnectionOpen)
    // the registrar may already be torn down when the node stops; nothing to undo then
    await this.#components.registrar.unhandle(HOLEPUNCH_PROTOCOL).catch(() => {})
    this.#shutdown.abort(new Error('hole-punch service stopped'))
    for (const timer of this.#retries) clearTimeout(timer)
    this.#retries.clear()
    this.#observer?.stop()
    this.#observer = undefined
    await Promise.allSettled([...this.#inflight.values()].map((f) => f.promise))
  }

  punch(peer: PeerId, options: PunchOptions = {}): Promise<Connection> {
    if (!this.#started) return Promise.reject(new Error('the hole-punch service is not started'))
    const direct = this.#directConnection(peer)
    if (direct !== undefined) return Promise.resolve(direct)
    const inflight = this.#inflight.get(peer.toString())
    if (inflight !== undefined) return inflight.promise
    return this.#initiate(peer, 'manual', { force: options.force ?? false, signal: options.signal })
  }

  reconsider(peer: PeerId): void {
    const relayed = this.#components.connectionManager
      .getConnections(peer)
      .find((c) => c.status === 'open' && isRelayed(c))
    if (relayed !== undefined) void this.#autoPunch(peer, relayed)
  }

  status(): HolePunchStatus {
    const observation = this.#observer?.current
    return {
      enabled: this.#settings.enabled,
      punchPort: this.#port,
      observed: observation?.observed,
      natKind: observation?.natKind ?? 'unknown',
      observation,
      keepalive: this.#observer?.keepalive,
      attempts: this.#book.snapshot(),
    }
  }

  async refreshObservation(): Promise<NatObservation | undefined> {
    return this.#observer?.probe()
  }

  addEventListener<K extends keyof HolePunchEvents>(
    type: K,
    listener: (event: CustomEvent<HolePunchEvents[K]>) => void,
  ): void {
    this.#events.addEventListener(type, listener as (event: Event) => void)
  }

  removeEventListener<K extends keyof HolePunchEvents>(
    type: K,
    listener: (event: CustomEvent<HolePunchEvents[K]>) => void,
  ): void {
    this.#events.removeEventListener(type, listener as (event: Event) => void)
  }

  #emit<K extends keyof HolePunchEvents>(type: K, detail: HolePunchEvents[K]): void {
    this.#events.dispatchEvent(new CustomEvent(type, { detail }))
  }

  // ------------------------------------------------------------------ policy

  readonly #onConnectionOpen = (evt: CustomEvent<Connection>): void => {
    if (isRelayed(evt.detail)) void this.#autoPunch(evt.detail.remotePeer, evt.detail)
  }

  /** An automatic attempt over `relayed`, if policy allows; a failure schedules the next one */
  async #autoPunch(peer: PeerId, relayed: Connection): Promise<void> {
    if (!this.#started || !this.#settings.enabled || !this.#settings.autoPunch) return
    const key = peer.toString()
    // One side initiates, so two relayed connections (one each way) or both
    // peers reacting to the same one never start two punches.
    if (!isUpgradeInitiator(this.#components.peerId, peer)) {
      this.#log.trace('relayed connection to %p: the peer (lower id) initiates the punch', peer)
      return
    }
    if (this.#inflight.has(key) || this.#directConnection(peer) !== undefined) return
    // strangers met through a shared relay or DHT (other fleets, admins) are not ours to punch
    if (!(await this.#wanted(peer))) return
    const backoff = this.#book.backoff(key)
    if (backoff !== undefined) {
      // recorded (not just logged) so `fleetmesh doctor` can say why the relay stays
      const err = this.#skip(
        'backoff',
        `not punching to ${key} before ${new Date(backoff.until).toISOString()}, backing off after: ${backoff.cause}`,
      )
      this.#record(peer, 'initiator', 'auto', performance.now(), {}, { error: err })
      return
    }
    await this.#initiate(peer, 'auto', { force: false, relayed }).catch(() => this.#retryLater(peer, relayed))
  }

  /**
   * Tries again once the backoff ends, while the peer is still relayed only: a
   * path that failed once (a firewall, a NAT that changed) may work later, and
   * nothing else would open a new relayed connection to trigger an attempt.
   */
  #retryLater(peer: PeerId, over: Connection): void {
    const key = peer.toString()
    // libp2p closed `over` under the exchange (it drops a duplicate): not the path's fault, retry soon
    const forgiven = over.status !== 'open' && this.#book.forgive(key)
    const until = this.#book.backoff(key)?.until
    if ((until === undefined && !forgiven) || !this.#started) return
    const timer = setTimeout(
      () => {
        this.#retries.delete(timer)
        this.reconsider(peer)
      },
      (until ?? Date.now()) - Date.now() + 10,
    )
    timer.unref()
    this.#retries.add(timer)
  }

  async #wanted(peer: PeerId): Promise<boolean> {
    const { shouldPunch } = this.#settings
    if (shouldPunch === undefined) return true
    const wanted = await Promise.resolve(shouldPunch(peer)).catch(() => false)
    if (!wanted) this.#log.trace('not punching with %p: not a peer this host punches with', peer)
    return wanted
  }

  #directConnection(peer: PeerId): Connection | undefined {
    return this.#components.connectionManager
      .getConnections(peer)
      .find((c) => c.status === 'open' && !isRelayed(c))
  }

  #skip(reason: SkipReason, detail: string): HolePunchSkippedError {
    this.#log('hole punch skipped (%s): %s', reason, detail)
    return new HolePunchSkippedError(reason, detail)
  }

  // --------------------------------------------------------------- initiator

  #initiate(
    peer: PeerId,
    trigger: Trigger,
    options: { force: boolean; relayed?: Connection; signal?: AbortSignal },
  ): Promise<Connection> {
    const key = peer.toString()
    const started = performance.now()
    const progress: Progress = {}
    const promise = this.#runInitiator(peer, options, progress)
    const entry: InFlight = { role: 'initiator', promise }
    this.#inflight.set(key, entry)
    promise.then(
      (connection) => this.#record(peer, 'initiator', trigger, started, progress, { connection }),
      (error: unknown) => this.#record(peer, 'initiator', trigger, started, progress, { error }),
    )
    void promise
      .catch(() => {})
      .finally(() => {
        if (this.#inflight.get(key) === entry) this.#inflight.delete(key)
      })
    return promise
  }

  async #runInitiator(
    peer: PeerId,
    options: { force: boolean; relayed?: Connection; signal?: AbortSignal },
    progress: Progress,
  ): Promise<Connection> {
    const signal =
      options.signal === undefined
        ? this.#shutdown.signal
        : AbortSignal.any([this.#shutdown.signal, options.signal])
    const local = await localOffer(this.#observer, this.#settings, options.force, this.#listening())
    if ('refuse' in local) throw this.#skip(local.refuse, local.detail)
    const relayed =
      options.relayed?.status === 'open'
        ? options.relayed
        : await this.#connectionToCoordinateOver(peer, signal)
    if (!isRelayed(relayed)) return relayed

    const stream = await relayed.newStream(HOLEPUNCH_PROTOCOL, { runOnLimitedConnection: true, signal })
    const fs = new FramedStream(stream, { maxFrameBytes: MAX_HOLEPUNCH_MESSAGE_BYTES })
    let exchange: Awaited<ReturnType<typeof proposePunch>>
    try {
      exchange = await proposePunch(fs, local, {
        force: options.force,
        timeoutMs: this.#settings.exchangeTimeoutMs,
        signal,
      })
    } catch (err) {
      if (err instanceof HolePunchRefusedError && err.reason === 'busy') {
        // Both sides asked at once and the peer (lower id) kept its own
        // attempt; ours is the responder side of that one.
        const theirs = this.#inflight.get(peer.toString())
        if (theirs?.role === 'responder') return theirs.promise
      }
      if (err instanceof HolePunchSkippedError) {
        // the ABORT is queued; a reset now could overtake it
        this.#log('hole punch with %p skipped: %s', peer, err.message)
      } else {
        fs.abort(err instanceof Error ? err : new Error(String(err)))
      }
      throw err
    }
    progress.remoteNat = exchange.remote.nat
    // the SYNC reaches the peer after about half a round trip; start together
    await sleep(exchange.rttMs / 2, signal)
    const offers = { local, remote: exchange.remote }
    return punchAndUpgrade(this.#punchSetup(), peer, offers, exchange.rttMs, progress, signal)
  }

  /** A relayed connection to coordinate over, or a direct one if that is what we got */
  async #connectionToCoordinateOver(peer: PeerId, signal: AbortSignal): Promise<Connection> {
    const connections = this.#components.connectionManager
      .getConnections(peer)
      .filter((c) => c.status === 'open')
    const existing = connections.find((c) => !isRelayed(c)) ?? connections[0]
    if (existing !== undefined) return existing
    try {
      return await this.#components.connectionManager.openConnection(peer, { signal })
    } catch (err) {
      throw new NoRelayedConnectionError(
        `no connection to ${peer} to coordinate a hole punch over, and dialling it failed ` +
          `(${errorInfo(err).message}); the peer must first be reachable, e.g. through a relay it reserved on`,
        { cause: err },
      )
    }
  }

  // --------------------------------------------------------------- responder

  readonly #onStream = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer
    const key = peer.toString()
    const fs = new FramedStream(stream, { maxFrameBytes: MAX_HOLEPUNCH_MESSAGE_BYTES })
    const signal = this.#shutdown.signal
    const started = performance.now()
    const progress: Progress = {}
    let deferred: PromiseWithResolvers<Connection> | undefined

    const decide = async (remote: PunchOffer): Promise<Answer> => {
      progress.remoteNat = remote.nat
      if (!(await this.#wanted(peer)))
        return { refuse: 'disabled', detail: 'this host punches only with peers of its own fleet' }
      const theirs = this.#inflight.get(key)
      // The lower peer id keeps its own attempt when both ask at once.
      if (
        theirs !== undefined &&
        (theirs.role === 'responder' || isUpgradeInitiator(this.#components.peerId, peer))
      ) {
        return { refuse: 'busy', detail: 'a hole punch with this peer is already in progress' }
      }
      // registered before the first await, so a second request cannot slip past the check above
      const pending = Promise.withResolvers<Connection>()
      const entry: InFlight = { role: 'responder', promise: pending.promise }
      this.#inflight.set(key, entry)
      void pending.promise
        .catch(() => {})
        .finally(() => {
          if (this.#inflight.get(key) === entry) this.#inflight.delete(key)
        })
      const offer = await localOffer(this.#observer, this.#settings, true, this.#listening())
      if ('refuse' in offer) {
        pending.reject(new HolePunchSkippedError(offer.refuse, offer.detail))
        return offer
      }
      deferred = pending
      return offer
    }

    let outcome: Awaited<ReturnType<typeof answerPunch>>
    try {
      outcome = await answerPunch(fs, decide, { timeoutMs: this.#settings.exchangeTimeoutMs, signal })
    } catch (err) {
      fs.abort(err instanceof Error ? err : new Error(String(err)))
      this.#log('hole-punch exchange with %p failed - %e', peer, err)
      if (deferred !== undefined) {
        deferred.reject(err)
        this.#record(peer, 'responder', 'remote', started, progress, { error: err })
      }
      return
    }
    if (outcome.kind === 'refused') {
      this.#log('declined a hole punch from %p: %s', peer, outcome.reason)
      return
    }
    if (deferred === undefined) return
    if (outcome.kind === 'aborted') {
      this.#log('hole punch with %p skipped by the peer: %s', peer, outcome.error.message)
      deferred.reject(outcome.error)
      this.#record(peer, 'responder', 'remote', started, progress, { error: outcome.error })
      return
    }
    // punching outlives the stream handler; the stream is done
    const pending = deferred
    const offers = { local: outcome.local, remote: outcome.remote }
    punchAndUpgrade(this.#punchSetup(), peer, offers, outcome.rttMs, progress, signal).then(
      (conn) => {
        pending.resolve(conn)
        this.#record(peer, 'responder', 'remote', started, progress, { connection: conn })
      },
      (err: unknown) => {
        pending.reject(err)
        this.#record(peer, 'responder', 'remote', started, progress, { error: err })
      },
    )
  }

  // ------------------------------------------------------------------- both

  /** What punch.ts needs of this service; the punch port is only known once started */
  #punchSetup(): PunchSetup {
    const { peerId, upgrader, connectionManager, events } = this.#components
    return {
      self: peerId,
      punchPort: this.#port,
      settings: this.#settings,
      upgrader,
      connectionManager,
      events,
      log: this.#log,
    }
  }

  #record(
    peer: PeerId,
    role: PunchAttempt['role'],
    trigger: Trigger,
    started: number,
    progress: Progress,
    outcome: Outcome,
  ): void {
    const attempt = describeAttempt({ peer: peer.toString(), role, trigger }, started, progress, outcome)
    this.#book.add(attempt)
    if (attempt.ok) {
      this.#log('direct connection to %p in %d ms (%s)', peer, attempt.ms, attempt.remoteAddr)
    } else {
      this.#log('hole punch with %p failed after %d ms: %s', peer, attempt.ms, attempt.error?.message)
    }
    this.#emit('attempt', attempt)
  }
}
