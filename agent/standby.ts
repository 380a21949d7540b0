/**
 * The agent's end of the standby link (protocol/standby.ts): while the fleet
 * lists more than one coordinator, it keeps a connection to the one the control
 * link would fail over to (failover.ts says which), held open by a quiet stream.
 * When the control link moves there, it finds that connection open
 * (link-path.ts reuses an open one) and its hello is all that is left to do.
 *
 * It never competes with the control link: each new target is first dialed
 * after a random pause of up to `settleMs`, so a fleet that just failed over
 * (and whose standby now points at the dead coordinator) does not dial it all
 * at once, and retries back off to minutes while the target stays down.
 */
import { errorMessage, RecoveryBackoff, WakeableSleep } from '../lib/index.ts'
import type { FleetHost } from '../net/index.ts'
import {
  decodeMessage,
  encodeMessage,
  FramedStream,
  MAX_STANDBY_FRAME_BYTES,
  PROTOCOLS,
  STANDBY_PING_MS,
  standbyFrameSchema,
} from '../protocol/index.ts'
import type { LinkTarget } from './link-init.ts'
import { connectToCoordinator } from './link-path.ts'

export interface StandbyInit {
  host: FleetHost
  /** The coordinator to stand by with now; undefined while there is none other than the link's own. */
  target: () => LinkTarget | undefined
  /** 'standby' events: `{ peerId, held: true }` once a stream is open, `{ peerId, held: false, error? }` when it goes. */
  emit: (event: string, fields: Record<string, unknown>) => void
  pingMs?: number
  /** Each new target is first dialed after a random pause of up to this */
  settleMs?: number
  dialTimeoutMs?: number
  backoffInitialMs?: number
  backoffMaxMs?: number
}

const FRAME = encodeMessage(standbyFrameSchema, { t: 'standby' })
/** How long it waits for a target while the fleet lists no other coordinator (a new list wakes it). */
const IDLE_MS = 3_600_000

export class StandbyLink {
  readonly #init: Required<Omit<StandbyInit, 'target' | 'emit' | 'host'>> & StandbyInit
  readonly #sleep = new WakeableSleep()
  /** Aborted by stop(): ends a dial, a stream's opening or the wait for its answer at once. */
  readonly #stopping = new AbortController()
  #stopped = false
  #run: Promise<void> | undefined
  /** The stream held now, and to whom. */
  #held: { peer: string; fs: FramedStream } | undefined

  constructor(init: StandbyInit) {
    this.#init = {
      pingMs: STANDBY_PING_MS,
      settleMs: 5_000,
      dialTimeoutMs: 20_000,
      backoffInitialMs: 1_000,
      backoffMaxMs: 300_000,
      ...init,
    }
  }

  start(): void {
    this.#run ??= this.#loop()
  }

  /** The target may have changed (the link moved on, or a new list came): lets go of a stream to another one. */
  reconsider(): void {
    const target = this.#init.target()?.peer.toString()
    if (this.#held !== undefined && this.#held.peer !== target) {
      // closed, not reset: the control link may be about to open its stream on this very connection
      void this.#held.fs.close().catch(() => {})
    }
    this.#sleep.wake()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#stopping.abort(new Error('the agent is stopping'))
    this.#held?.fs.abort(new Error('the agent is stopping'))
    this.#sleep.wake()
    await this.#run
  }

  async #loop(): Promise<void> {
    const { backoffInitialMs: initialMs, backoffMaxMs: maxMs, settleMs } = this.#init
    const retry = new RecoveryBackoff({ initialMs, maxMs, quickMaxMs: 30_000, quickForMs: 120_000 })
    let settled: string | undefined
    while (!this.#stopped) {
      const target = this.#init.target()
      if (target === undefined) {
        await this.#sleep.sleep(IDLE_MS)
        continue
      }
      const peer = target.peer.toString()
      if (settled !== peer) {
        settled = peer
        await this.#sleep.sleep(settleMs * Math.random())
        continue // woken early, or the target changed meanwhile: decide again
      }
      try {
        await this.#hold(target, () => retry.succeeded())
      } catch (err) {
        if (!this.#stopped)
          this.#init.emit('standby', { peerId: peer, held: false, error: errorMessage(err) })
      }
      if (this.#stopped) break
      if (this.#init.target()?.peer.toString() === peer) await this.#sleep.sleep(retry.next())
    }
  }

  /**
   * Dials the target, opens the stream and sends a frame every `pingMs` until it
   * fails or is let go; `held` once the coordinator answered (a hold that
   * worked resets the backoff, however it ends).
   */
  async #hold(target: LinkTarget, held: () => void): Promise<void> {
    const { host, dialTimeoutMs, pingMs } = this.#init
    const peer = target.peer
    const stopping = this.#stopping.signal
    const conn = await connectToCoordinator({
      host,
      coordinator: peer,
      coordinatorAddrs: target.addrs,
      dialTimeoutMs,
      ...(target.discover ? { discover: target.discover } : {}),
      log: () => {},
      signal: stopping,
    })
    const stream = await conn.newStream(PROTOCOLS.standby, {
      signal: AbortSignal.any([stopping, AbortSignal.timeout(dialTimeoutMs)]),
    })
    const fs = new FramedStream(stream, { maxFrameBytes: MAX_STANDBY_FRAME_BYTES })
    const mine = { peer: peer.toString(), fs }
    this.#held = mine
    // the background read below may end after this hold did: its wake must not cut the next sleep short
    let over = false
    try {
      await fs.send(FRAME)
      // its answer says it holds this machine's stream (an unknown peer's is reset instead)
      const answer = await fs.readOne({ signal: stopping, timeoutMs: dialTimeoutMs })
      decodeMessage(standbyFrameSchema, answer, 'standby answer', MAX_STANDBY_FRAME_BYTES)
      held()
      this.#init.emit('standby', { peerId: mine.peer, held: true, addr: conn.remoteAddr.toString() })
      // the coordinator sends nothing more: a read that ends means it let go, or the connection went
      let ended: Error | undefined
      fs.read()
        .then(
          () => new Error('the coordinator ended the standby stream'),
          (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
        )
        .then((err) => {
          ended = err
          if (!over) this.#sleep.wake()
        })
      while (true) {
        await this.#sleep.sleep(pingMs)
        if (ended !== undefined) throw ended
        if (this.#stopped || this.#init.target()?.peer.toString() !== mine.peer) break
        await fs.send(FRAME)
      }
      await fs.close().catch(() => {})
      this.#init.emit('standby', { peerId: mine.peer, held: false })
    } catch (err) {
      // not left open beside the next try's stream (the coordinator would hold it until it fell silent)
      fs.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    } finally {
      over = true
      if (this.#held === mine) this.#held = undefined
    }
  }
}
