/**
 * Exponential backoff with jitter, shared by every retry loop (control link,
 * relay reservations, blob downloads): after a coordinator or relay restart a
 * whole fleet retries, and jitter keeps it from retrying in lock step.
 */

export interface BackoffInit {
  /** Delay cap of the first retry, in ms */
  initialMs: number
  /** The cap never grows past this, in ms */
  maxMs: number
}

/**
 * The delay before retry number `attempt` (0 for the first): "equal jitter",
 * uniformly between half the cap and the cap, where the cap doubles per attempt
 * up to `maxMs`. Half the cap is guaranteed so a busy peer always gets a pause.
 */
export function backoffDelay(attempt: number, init: BackoffInit): number {
  const cap = Math.min(init.maxMs, init.initialMs * 2 ** Math.min(Math.max(attempt, 0), 30))
  return cap / 2 + (Math.random() * cap) / 2
}

export interface RecoveryBackoffInit extends BackoffInit {
  /** The cap while the peer worked less than `quickForMs` ago, in ms */
  quickMaxMs: number
  /** How long after the last success retries stay quick, in ms */
  quickForMs: number
}

/**
 * The retry delays of a peer that worked until a moment ago. A lost relay or
 * coordinator is usually one that restarts and is back within seconds; a
 * backoff that kept doubling through those seconds would sleep through its
 * return (a 10 s relay restart cost agents 17–21 s). So for `quickForMs` after
 * the last success the cap stays at `quickMaxMs`, and only then grows to
 * `maxMs`, so that a peer gone for good costs little. `seen()` (the peer
 * answered, but the try failed for another reason) starts over at the first
 * delay: whatever is missing is probably moments away.
 *
 * @example
 * ```ts
 * const backoff = new RecoveryBackoff({ initialMs: 250, maxMs: 30_000, quickMaxMs: 1_000, quickForMs: 120_000 })
 * backoff.succeeded()             // connected
 * await sleep(backoff.next())     // lost: ≤ 1 s between tries for two minutes
 * ```
 */
export class RecoveryBackoff {
  readonly #init: RecoveryBackoffInit
  #attempt = 0
  #okAt = Number.NEGATIVE_INFINITY

  constructor(init: RecoveryBackoffInit) {
    this.#init = init
  }

  /** The try worked: the next failure starts from the first delay, within the quick window. */
  succeeded(now = Date.now()): void {
    this.#attempt = 0
    this.#okAt = now
  }

  /** The peer was seen again: the next delay is the first one. */
  seen(): void {
    this.#attempt = 0
  }

  /** Failures since the last success or sighting */
  get attempt(): number {
    return this.#attempt
  }

  /** The delay before the next try, counting this failure. */
  next(now = Date.now()): number {
    this.#attempt++
    const quick = now - this.#okAt < this.#init.quickForMs
    const maxMs = quick ? Math.min(this.#init.maxMs, this.#init.quickMaxMs) : this.#init.maxMs
    return backoffDelay(this.#attempt, { initialMs: this.#init.initialMs, maxMs })
  }
}
