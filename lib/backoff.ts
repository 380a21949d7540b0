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
