/**
 * The wait of a prepared update for its maintenance window
 * (protocol/maintenance-window.ts): it looks at the clock at least every minute
 * (the wall clock may jump: NTP, a suspended device) and whenever it is woken,
 * and has the manifest verified again each time, so one that expires or is
 * revoked meanwhile is not activated later. A newer manifest (supersede) cuts
 * the wait; so does the updater closing, whose reason is thrown. The clock,
 * the time zone and the sleep are injected, so tests can run the wait.
 */
import { sleep } from '../lib/index.ts'
import {
  type Manifest,
  type ManifestRefusedError,
  systemTimeZone,
  type WindowState,
  windowState,
} from '../protocol/index.ts'

/** The longest nap before looking at the clock again. */
const MAX_NAP_MS = 60_000

export interface UpdateWindowInit {
  now: () => number
  /** IANA time zone the windows are read in. Default: the system's. */
  timeZone?: string | undefined
  /** Must reject when the signal aborts. Default: lib's sleep. */
  sleep?: ((ms: number, signal: AbortSignal) => Promise<void>) | undefined
  /** The machine's tags as they are now. */
  tags: () => readonly string[]
  /** The updater closing: the wait throws its reason. */
  signal: AbortSignal
}

/** How a wait ended: a window is open, a newer manifest took over, or the manifest is refused now. */
export type WaitEnd =
  | { kind: 'open' }
  | { kind: 'superseded' }
  | { kind: 'refused'; refusal: ManifestRefusedError }

export class UpdateWindow {
  readonly timeZone: string
  readonly #init: UpdateWindowInit
  /** Cuts the current nap: to look again, or to give way. */
  #nap: AbortController | null = null
  /** A newer manifest arrived; seen by the wait even between naps. */
  #superseded = false

  constructor(init: UpdateWindowInit) {
    this.#init = init
    this.timeZone = init.timeZone ?? systemTimeZone()
  }

  /** Whether a window of the machine is open now. */
  state(m: Manifest): WindowState {
    return windowState(m.windows ?? [], this.#init.tags(), this.#init.now(), this.timeZone)
  }

  /** Forgets a supersede meant for an earlier wait: called when an update's steps start. */
  reset(): void {
    this.#superseded = false
  }

  /** A newer manifest verified: the wait gives way to it. */
  supersede(): void {
    this.#superseded = true
    this.#nap?.abort()
  }

  /** Looks again now (the revocation list changed). */
  wake(): void {
    this.#nap?.abort()
  }

  /** Waits until a window is open; `verify` is the manifest's refusal as of now, if any. */
  async wait(m: Manifest, verify: () => ManifestRefusedError | undefined): Promise<WaitEnd> {
    const nap = this.#init.sleep ?? sleep
    for (;;) {
      if (this.#superseded) return { kind: 'superseded' }
      const refusal = verify()
      if (refusal !== undefined) return { kind: 'refused', refusal }
      const state = this.state(m)
      if (state.kind !== 'closed') return { kind: 'open' }
      const cut = new AbortController()
      this.#nap = cut
      try {
        const ms = Math.max(1, Math.min(state.opensAt - this.#init.now(), MAX_NAP_MS))
        await nap(ms, AbortSignal.any([this.#init.signal, cut.signal]))
      } catch (err) {
        if (this.#init.signal.aborted) throw this.#init.signal.reason
        if (!cut.signal.aborted) throw err
      } finally {
        this.#nap = null
      }
    }
  }
}
