/**
 * The audit log: every admin action, allowed or not, becomes a record chained to
 * the one before it by hash and signed by the coordinator. Anyone holding the
 * coordinator's public key can check an exported log offline: a record edited,
 * dropped, inserted or reordered breaks the chain, and a record that claims an
 * admin did something must carry that admin's signed request.
 *
 * What the chain cannot show on its own is a truncated tail: a log cut after
 * record n is a valid log of n records. Detecting that needs a head (index and
 * hash) remembered outside the coordinator from an earlier verification, passed
 * back as `remembered`: a log that no longer extends it fails, naming what is
 * missing or changed. The admin CLI keeps one per admin home.
 *
 * @example
 *
 * ```ts
 * const result = verifyAuditLog(await store.listAudit(0, 1000), { coordinator: coordinatorKey.publicKey })
 * if (!result.ok) console.error(`audit record ${result.index}: ${result.problem}`)
 * ```
 */
import { createHash } from 'node:crypto'
import type { PublicKey } from '../keys/index.ts'
import { DOMAINS, encodeCanonical, verify } from '../keys/index.ts'
import { bytesEqual, toHex } from '../lib/index.ts'
import { openEnvelope } from './envelope.ts'
import { adminRequestSchema } from './messages.ts'

export type AuditOutcome = 'ok' | 'denied' | 'error'

export interface AuditEntry {
  at: number
  /** The libp2p peer that made the request (authenticated by Noise). */
  peerId: string
  /** base64url admin public key when the request was signed (even if it was then denied), else null. */
  actor: string | null
  action: string
  outcome: AuditOutcome
  detail: string
  /** The admin's signed request envelope, at most MAX_AUDIT_REQUEST_BYTES. */
  request: Uint8Array | null
}

export interface AuditRecord extends AuditEntry {
  /** 1-based and gapless. */
  index: number
  /** The previous record's hash; 32 zero bytes for index 1. */
  prevHash: Uint8Array
  /** sha256 over the record's fields, see audit.ts auditHash. */
  hash: Uint8Array
  /** The coordinator's signature over `hash`, domain DOMAINS.audit. */
  sig: Uint8Array
}

export const AUDIT_HASH_BYTES = 32

/** prevHash of the first record. */
export const GENESIS_PREV_HASH: Uint8Array = new Uint8Array(AUDIT_HASH_BYTES)

/** Everything a record's hash covers: the record minus its own hash and signature. */
export type AuditHashFields = Omit<AuditRecord, 'hash' | 'sig'>

/**
 * sha256 of the canonical CBOR map
 * { index, at, peerId, actor, action, outcome, detail, request, prevHash }
 * (integers as CBOR integers, actor and request as null when absent, request and
 * prevHash as byte strings). The fields are picked one by one so that passing a
 * whole AuditRecord hashes the same bytes as passing just these fields.
 */
export function auditHash(fields: AuditHashFields): Uint8Array {
  const encoded = encodeCanonical({
    index: fields.index,
    at: fields.at,
    peerId: fields.peerId,
    actor: fields.actor,
    action: fields.action,
    outcome: fields.outcome,
    detail: fields.detail,
    request: fields.request,
    prevHash: fields.prevHash,
  })
  return new Uint8Array(createHash('sha256').update(encoded).digest())
}

/** The newest record of a log verified earlier, as remembered outside the coordinator. */
export interface AuditHead {
  index: number
  hash: Uint8Array
  /** When it was verified (ms since the epoch), for messages. */
  verifiedAt?: number
}

export interface VerifyAuditOptions {
  coordinator: PublicKey
  /**
   * When several coordinators serve the fleet (protocol/coordinator-list.ts),
   * each signs what it appends: a record signed by any of these keys, or by
   * `coordinator`, verifies.
   */
  coordinators?: readonly PublicKey[]
  /**
   * The record just before records[0], from an earlier verified page.
   * Without it records[0] must be record 1.
   */
  previous?: AuditRecord
  /**
   * A head verified earlier: the log must still hold that record, unchanged,
   * so records removed or replaced since then are detected.
   */
  remembered?: AuditHead
}

export type AuditVerification = { ok: true; count: number } | { ok: false; index: number; problem: string }

/**
 * Checks, in order, for each record: the index follows on, prevHash links to the
 * record before, the hash matches the fields, the coordinator's signature holds,
 * and an 'ok' record with a request carries a valid admin request signed by its
 * actor. Denied and failed records may carry requests that do not verify (that
 * is often why they were denied), so those are not opened. Reports the first
 * problem; `index` is the log index where the chain stops being trustworthy.
 */
export function verifyAuditLog(records: readonly AuditRecord[], opts: VerifyAuditOptions): AuditVerification {
  let expectedIndex = 1
  let expectedPrev = GENESIS_PREV_HASH
  if (opts.previous !== undefined) {
    const problem = checkSealed(opts.previous, signers(opts))
    if (problem !== undefined) {
      return { ok: false, index: opts.previous.index, problem: `the anchoring previous record: ${problem}` }
    }
    expectedIndex = opts.previous.index + 1
    expectedPrev = opts.previous.hash
  }
  for (const record of records) {
    if (record.index !== expectedIndex) {
      return {
        ok: false,
        index: expectedIndex,
        problem:
          record.index > expectedIndex
            ? `record ${expectedIndex} is missing: the next record has index ${record.index}`
            : `expected record ${expectedIndex}, found index ${record.index} (records repeated or out of order)`,
      }
    }
    if (!bytesEqual(record.prevHash, expectedPrev)) {
      return {
        ok: false,
        index: record.index,
        problem:
          `prevHash ${toHex(record.prevHash)} does not link to the previous record's hash ` +
          `${toHex(expectedPrev)} (a record before it was changed, removed or reordered)`,
      }
    }
    const sealed = checkSealed(record, signers(opts))
    if (sealed !== undefined) return { ok: false, index: record.index, problem: sealed }
    if (record.outcome === 'ok' && record.request !== null) {
      const problem = checkRequest(record.request, record.actor)
      if (problem !== undefined) return { ok: false, index: record.index, problem }
    }
    expectedIndex = record.index + 1
    expectedPrev = record.hash
  }
  if (opts.remembered !== undefined) {
    const problem = checkRemembered(records, opts.remembered, expectedIndex - 1)
    if (problem !== undefined) return problem
  }
  return { ok: true, count: records.length }
}

/**
 * Whether the verified chain, ending at `lastIndex`, still holds the remembered
 * head. Its records come before the ones checked only when the caller verified
 * from a later `previous`, and then the head is not checked against them.
 */
function checkRemembered(
  records: readonly AuditRecord[],
  head: AuditHead,
  lastIndex: number,
): AuditVerification | undefined {
  const when = head.verifiedAt === undefined ? 'earlier' : `on ${new Date(head.verifiedAt).toISOString()}`
  if (lastIndex < head.index) {
    const missing =
      lastIndex + 1 === head.index ? `record ${head.index} is` : `records ${lastIndex + 1}–${head.index} are`
    return {
      ok: false,
      index: lastIndex + 1,
      problem:
        `${missing} missing: the log ends at record ${lastIndex}, but record ${head.index} ` +
        `(hash ${toHex(head.hash)}) was verified ${when}; the end of the log was deleted`,
    }
  }
  const record = records.find((r) => r.index === head.index)
  if (record !== undefined && !bytesEqual(record.hash, head.hash)) {
    return {
      ok: false,
      index: head.index,
      problem:
        `record ${head.index} is not the one verified ${when}: its hash is now ${toHex(record.hash)}, ` +
        `was ${toHex(head.hash)}; the log was cut back to before record ${head.index} and written again`,
    }
  }
  return undefined
}

/**
 * The bytes one record takes in an audit page (canonical CBOR, as the admin
 * protocol sends it), so pages can be cut to fit a frame.
 */
export function auditRecordBytes(record: AuditRecord): number {
  const { index, at, peerId, actor, action, outcome, detail, request, prevHash, hash, sig } = record
  return encodeCanonical({ index, at, peerId, actor, action, outcome, detail, request, prevHash, hash, sig })
    .byteLength
}

function signers(opts: VerifyAuditOptions): PublicKey[] {
  return [opts.coordinator, ...(opts.coordinators ?? []).filter((k) => !k.equals(opts.coordinator))]
}

function checkSealed(record: AuditRecord, coordinators: readonly PublicKey[]): string | undefined {
  const hash = auditHash(record)
  if (!bytesEqual(hash, record.hash)) {
    return `stored hash ${toHex(record.hash)} does not match the record's fields (hash ${toHex(hash)}): the record was altered`
  }
  if (!coordinators.some((key) => verify(key.bytes, DOMAINS.audit, record.hash, record.sig))) {
    const keys = coordinators.map((k) => k.toString()).join(', ')
    return `signature does not verify against ${coordinators.length > 1 ? 'any coordinator key of' : 'coordinator key'} ${keys}`
  }
  return undefined
}

function checkRequest(request: Uint8Array, actor: string | null): string | undefined {
  let signer: PublicKey
  try {
    signer = openEnvelope(adminRequestSchema, DOMAINS.adminRequest, request).signer
  } catch (err) {
    return `outcome is "ok" but the stored request is not a valid signed admin request: ${(err as Error).message}`
  }
  if (actor === null) {
    return `outcome is "ok" and the request is signed by ${signer}, but the record names no actor`
  }
  if (signer.toString() !== actor) {
    return `outcome is "ok" but the request is signed by ${signer}, not by the recorded actor ${actor}`
  }
  return undefined
}
