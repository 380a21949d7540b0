/**
 * What the service remembers about its attempts: the last result and counts
 * per peer (for `status()` and `fleetmesh doctor`), and the per-peer backoff
 * that keeps automatic attempts from repeating a failure on every new
 * relayed connection. Both maps are bounded; the least recently updated peer
 * goes first.
 */

import type { Connection } from '@libp2p/interface'
import type { PeerPunchStatus, PunchAttempt } from './api.ts'
import { errorInfo, HolePunchRefusedError, HolePunchSkippedError } from './errors.ts'
import { type Endpoint, formatEndpoint } from './nat.ts'

/** Figures of one attempt, filled in as it progresses */
export interface Progress {
  remoteNat?: PunchAttempt['remoteNat']
  target?: Endpoint
  synAttempts?: number
  connectMs?: number
  upgradeMs?: number
  lan?: boolean
}

export interface Backoff {
  until: number
  delayMs: number
  /** The failure that started it */
  cause: string
}

export type Outcome = { connection: Connection } | { error: unknown }

/** The record of an attempt that started at `started` (a `performance.now()` value) */
export function describeAttempt(
  base: Pick<PunchAttempt, 'peer' | 'role' | 'trigger'>,
  started: number,
  progress: Progress,
  outcome: Outcome,
): PunchAttempt {
  const attempt: PunchAttempt = {
    ...base,
    ok: 'connection' in outcome,
    ms: Math.round(performance.now() - started),
    at: Date.now(),
    ...(progress.remoteNat === undefined ? {} : { remoteNat: progress.remoteNat }),
    ...(progress.target === undefined ? {} : { target: formatEndpoint(progress.target) }),
    ...(progress.synAttempts === undefined ? {} : { synAttempts: progress.synAttempts }),
    ...(progress.connectMs === undefined ? {} : { connectMs: progress.connectMs }),
    ...(progress.upgradeMs === undefined ? {} : { upgradeMs: progress.upgradeMs }),
    ...(progress.lan === undefined ? {} : { lan: progress.lan }),
  }
  if ('connection' in outcome) {
    attempt.remoteAddr = outcome.connection.remoteAddr.toString()
  } else {
    attempt.error = errorInfo(outcome.error)
    if (outcome.error instanceof HolePunchSkippedError || outcome.error instanceof HolePunchRefusedError) {
      attempt.skipped = outcome.error.reason
    }
  }
  return attempt
}

export interface AttemptBookInit {
  backoffMs: number
  maxBackoffMs: number
  maxPeers: number
}

export class AttemptBook {
  readonly #init: AttemptBookInit
  readonly #peers = new Map<string, PeerPunchStatus>()
  readonly #backoff = new Map<string, Backoff>()

  constructor(init: AttemptBookInit) {
    this.#init = init
  }

  /** The backoff in force for `peer`, if any */
  backoff(peer: string): Backoff | undefined {
    const backoff = this.#backoff.get(peer)
    return backoff !== undefined && backoff.until > Date.now() ? backoff : undefined
  }

  /**
   * Ends `peer`'s backoff now, keeping its length (the next failure still doubles
   * it), when the failure said nothing about the path; false if there was none.
   */
  forgive(peer: string): boolean {
    const backoff = this.#backoff.get(peer)
    if (backoff === undefined) return false
    backoff.until = Date.now()
    return true
  }

  add(attempt: PunchAttempt): void {
    const key = attempt.peer
    if (attempt.ok) {
      this.#backoff.delete(key)
    } else if (attempt.trigger === 'auto' && attempt.skipped !== 'backoff') {
      // only automatic attempts back off: an explicit punch() is the operator asking
      const last = this.#backoff.get(key)
      const delayMs =
        last === undefined ? this.#init.backoffMs : Math.min(last.delayMs * 2, this.#init.maxBackoffMs)
      const cause = attempt.error?.message ?? 'an earlier failure'
      bounded(this.#backoff, this.#init.maxPeers, key, { until: Date.now() + delayMs, delayMs, cause })
    }
    const previous = this.#peers.get(key)
    bounded(this.#peers, this.#init.maxPeers, key, {
      ...attempt,
      successes: (previous?.successes ?? 0) + (attempt.ok ? 1 : 0),
      failures: (previous?.failures ?? 0) + (!attempt.ok && attempt.skipped === undefined ? 1 : 0),
      skips: (previous?.skips ?? 0) + (attempt.skipped === undefined ? 0 : 1),
    })
  }

  /** Keyed by peer id, with `backoffUntil` where a backoff is in force */
  snapshot(): Record<string, PeerPunchStatus> {
    return Object.fromEntries(
      [...this.#peers].map(([key, status]) => {
        const until = this.backoff(key)?.until
        return [key, until === undefined ? status : { ...status, backoffUntil: until }]
      }),
    )
  }
}

/** Set `key` as the newest entry, dropping the oldest beyond `max` */
function bounded<V>(map: Map<string, V>, max: number, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > max) {
    const oldest = map.keys().next()
    if (oldest.done !== true) map.delete(oldest.value)
  }
}
