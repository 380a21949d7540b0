/**
 * The link under a live `watch`: which errors mean the coordinator went away
 * (and which that it refuses this admin for good), and reopening the watch
 * with backoff after a loss. `fleetmesh watch` (and deploy) and the dashboard
 * (ui/events.ts) share it; each says in its own words what happens.
 */
import { backoffDelay, errorMessage, sleep } from '../lib/index.ts'
import { AdminRequestError } from './client.ts'

/** Retry pace after the watch stream is lost (a coordinator restart takes seconds). */
export const RECONNECT_BACKOFF = { initialMs: 500, maxMs: 10_000 }

/** Errors that end a stream because the link went away, not because the coordinator refused. */
const LINK_ERRORS = new Set([
  'UnexpectedEndOfStreamError',
  'StreamResetError',
  'StreamAbortedError',
  'StreamStateError',
  'StreamClosedError',
  'ConnectionClosedError',
])

/**
 * Refusals of this admin's own certificate chain. The coordinator checks the
 * chain again while a watch runs and ends it with one of these when the
 * certificate is revoked or expires; reconnecting cannot help, so the watch
 * ends, saying why.
 */
export const AUTHORITY_REFUSALS: ReadonlySet<string> = new Set([
  'revoked',
  'expired',
  'not-yet-valid',
  'wrong-issuer',
  'signer-mismatch',
  'capability-missing',
  'out-of-scope',
])

/** The watch ended because the coordinator no longer accepts this admin's certificate. */
export function authorityRefused(err: unknown): err is AdminRequestError {
  return err instanceof AdminRequestError && AUTHORITY_REFUSALS.has(err.code)
}

/** Whether `err` means the coordinator could not be reached or the link to it broke. */
export function linkLost(err: unknown): boolean {
  if (err instanceof AdminRequestError) return err.code === 'unreachable'
  return err instanceof Error && LINK_ERRORS.has(err.name)
}

/**
 * A lost link in a few words: a closed stream's own message talks about frames,
 * and a failed dial's ends with the socket error ("connect ECONNREFUSED …").
 */
export function linkReason(err: unknown): string {
  if (err instanceof AdminRequestError && err.code === 'unreachable')
    return err.message.split(': ').at(-1) ?? ''
  return err instanceof Error && LINK_ERRORS.has(err.name) ? 'the connection closed' : errorMessage(err)
}

/** What reopenWatch tells as it goes. */
export interface ReconnectReport {
  /** Before each wait: how long, and which attempt comes after it (from 1). */
  waiting(delayMs: number, attempt: number): void
  /** An attempt failed because the coordinator is still out of reach. */
  stillLost(err: unknown): void
  reconnected(): void
}

/** A ReconnectReport that tells the operator each step in a line (on stderr, through `say`). */
export function sayReconnect(say: (line: string) => void): ReconnectReport {
  return {
    waiting: (delay, attempt) => say(`reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`),
    stillLost: (err) => say(`still cannot reach the coordinator (${linkReason(err)})`),
    reconnected: () => say('reconnected to the coordinator'),
  }
}

/**
 * Opens a watch again (`open`: of the fleet, a rollout or one machine) after the
 * link broke, retrying with backoff while the coordinator stays out of reach;
 * null when `deadline` (ms since the epoch) passes first. Aborting `signal`
 * rejects with its reason, as lib's sleep does.
 */
export async function reopenWatch<W>(
  open: () => Promise<W>,
  deadline: number,
  report: ReconnectReport,
  signal?: AbortSignal,
): Promise<W | null> {
  for (let attempt = 0; ; attempt++) {
    const delay = Math.min(backoffDelay(attempt, RECONNECT_BACKOFF), deadline - Date.now())
    if (delay <= 0) return null
    report.waiting(delay, attempt + 1)
    await sleep(delay, signal)
    try {
      const watch = await open()
      report.reconnected()
      return watch
    } catch (err) {
      if (!linkLost(err)) throw err
      report.stillLost(err)
    }
  }
}
