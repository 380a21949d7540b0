/**
 * What the coordinator writes down about each admin request, and where:
 *
 * - changes (requests that need the deploy or admin capability) and every
 *   refusal or failure go to the hash-chained, signed audit log;
 * - successful reads (requests that need only the read capability: machines,
 *   watch, audit, ping, …) are counted apart, one summary per admin, op and
 *   hour (store.recordRead), so polling cannot drown the changes;
 * - refusals of requests that never authenticated are rate-limited
 *   (audit-limiter.ts): anyone can send those.
 *
 * Every chained record is bounded: only an accepted request's signed bytes are
 * kept (the proof of who asked for a change); a refused one is described by its
 * op, size, SHA-256 and the reason, never stored, so a stranger's 256 KiB of
 * garbage costs the log a few hundred bytes.
 */
import type { PrivateKey } from '../keys/index.ts'
import { sha256Hex } from '../lib/index.ts'
import type { AdminOp, AuditOutcome } from '../protocol/index.ts'
import { CAPABILITY, type Caller } from './admin-context.ts'
import { signAuditHash } from './audit.ts'
import { RefusalLimiter, type RefusalLimits } from './audit-limiter.ts'
import { type AuditSigner, type FleetStore, MAX_AUDIT_REQUEST_BYTES } from './store.ts'

/** Successful reads of one admin and op within this window share one summary. */
export const READ_WINDOW_MS = 60 * 60_000
/** A chained record's detail (the reason, the result) is cut to this many characters. */
export const MAX_AUDIT_DETAIL = 1000
/** A read summary keeps the latest read's detail, cut to this many characters. */
export const MAX_READ_DETAIL = 200

export interface AdminAuditInit {
  store: FleetStore
  key: PrivateKey
  limits?: Partial<RefusalLimits>
}

/** One finished (or refused) admin request. */
export interface AdminAttempt {
  caller: Caller
  /** The op, or "unknown" when the request did not open. */
  action: string
  outcome: AuditOutcome
  detail: string
  /** The request passed signature, freshness, certificate chain and nonce checks. */
  authenticated: boolean
}

/** Where an attempt went: the chained log, a read summary, or only the refusal counter. */
export type Audited = 'chained' | 'read' | 'counted'

export class AdminAudit {
  readonly #store: FleetStore
  readonly #sign: AuditSigner
  readonly limiter: RefusalLimiter

  constructor(init: AdminAuditInit) {
    this.#store = init.store
    this.#sign = signAuditHash(init.key)
    this.limiter = new RefusalLimiter(init.limits)
  }

  async record(attempt: AdminAttempt): Promise<Audited> {
    const { caller, action, outcome } = attempt
    const { peerId, actor, request } = caller
    const at = Date.now()
    if (outcome === 'ok' && actor !== null && isRead(action)) {
      const detail = attempt.detail.slice(0, MAX_READ_DETAIL)
      await this.#store.recordRead({ actor, peerId, action, detail, at, windowStart: windowStart(at) })
      return 'read'
    }
    let note = ''
    if (outcome !== 'ok' && !attempt.authenticated) {
      const verdict = this.limiter.admit(peerId, at)
      if (!verdict.record) return 'counted'
      note = verdict.note
    }
    // An accepted request is the admin's signed word for the change: kept whole (it fitted one frame).
    const keep = outcome === 'ok' && request.byteLength <= MAX_AUDIT_REQUEST_BYTES
    const detail =
      attempt.detail.slice(0, MAX_AUDIT_DETAIL) +
      note +
      (keep ? '' : ` [request ${request.byteLength} bytes, sha256 ${sha256Hex(request)}, not kept]`)
    await this.#store.appendAudit(
      { at, peerId, actor, action, outcome, detail, request: keep ? request : null },
      this.#sign,
    )
    return 'chained'
  }
}

/** Ops that need only the read capability change nothing, so their successes are summaries. */
export function isRead(action: string): boolean {
  return Object.hasOwn(CAPABILITY, action) && CAPABILITY[action as AdminOp['op']] === 'read'
}

function windowStart(at: number): number {
  return at - (at % READ_WINDOW_MS)
}
