/**
 * How often the punch port's NAT mapping is refreshed (observer-client.ts asks
 * its kept observer connection at this interval), learned from the NAT itself.
 *
 * A NAT forgets an idle TCP mapping after its own timeout (30 s on some
 * routers, hours on others) and gives no sign of it until the next packet goes
 * nowhere. So: start at `maxMs`; an answer that comes back on the kept
 * connection after an interval says the mapping outlived it, and the interval
 * stays; a lost mapping (no answer on the kept connection while a fresh one to
 * the same observer works, or a new external endpoint) says it did not: halve
 * the interval, down to `minMs`, and never go back above half of the shortest
 * interval a mapping was lost at. Idle fleets pay for each keepalive (radio
 * wake-ups, metered links), so the interval only shrinks on evidence.
 */

/** What the service reports of its keepalive (status(), runtime.json, doctor). */
export interface KeepaliveStatus {
  /** The interval in force */
  intervalMs: number
  maxMs: number
  minMs: number
  /** The shortest interval after which a mapping was found lost, if ever */
  lostAfterMs?: number
  /** Keepalives answered on the kept connection, and mappings found lost */
  held: number
  lost: number
}

export const MIN_KEEPALIVE_MS = 5_000

export class KeepaliveTuner {
  readonly #maxMs: number
  readonly #minMs: number
  #intervalMs: number
  #lostAfterMs: number | undefined
  #held = 0
  #lost = 0

  constructor(maxMs: number, minMs = Math.min(MIN_KEEPALIVE_MS, maxMs)) {
    this.#maxMs = maxMs
    this.#minMs = minMs
    this.#intervalMs = maxMs
  }

  get intervalMs(): number {
    return this.#intervalMs
  }

  /** The mapping outlived an idle gap of the current interval. */
  held(): void {
    this.#held++
  }

  /**
   * The mapping did not outlive an idle gap of `idleMs`.
   *
   * @returns the new interval
   */
  lost(idleMs: number): number {
    this.#lost++
    this.#lostAfterMs = Math.min(this.#lostAfterMs ?? Number.POSITIVE_INFINITY, idleMs)
    this.#intervalMs = Math.max(this.#minMs, Math.min(this.#intervalMs, Math.floor(this.#lostAfterMs / 2)))
    return this.#intervalMs
  }

  status(): KeepaliveStatus {
    return {
      intervalMs: this.#intervalMs,
      maxMs: this.#maxMs,
      minMs: this.#minMs,
      ...(this.#lostAfterMs === undefined ? {} : { lostAfterMs: this.#lostAfterMs }),
      held: this.#held,
      lost: this.#lost,
    }
  }
}
