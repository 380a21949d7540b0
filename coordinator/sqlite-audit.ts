/**
 * The audit log in the embedded store: the hash-chained records (table audit)
 * and the summaries of successful reads kept apart from them (table
 * audit_reads); the statements and methods behind FleetStore's audit methods,
 * which sqlite-store.ts delegates here. Pages of the log are cut by bytes as
 * well as by count, reading rows one at a time, so a page never exceeds what
 * the caller can send however large single records are.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import {
  type AuditRead,
  auditHash,
  auditRecordBytes,
  GENESIS_PREV_HASH,
  MAX_AUDIT_RECORD_DETAIL,
} from '../protocol/index.ts'
import type { WriteTransaction } from './sqlite-narinfos.ts'
import {
  blob,
  checkLimit,
  describeValue,
  integer,
  prepareStatements,
  type Row,
  text,
  toAudit,
} from './sqlite-rows.ts'
import {
  type AuditEntry,
  type AuditReadEntry,
  type AuditRecord,
  type AuditSigner,
  MAX_AUDIT_READ_ROWS,
  MAX_AUDIT_REQUEST_BYTES,
  StoreLimitError,
} from './store.ts'

const SIGNATURE_BYTES = 64

const statementSql = {
  lastAudit: 'SELECT idx, hash FROM audit ORDER BY idx DESC LIMIT 1',
  insertAudit: `INSERT INTO audit (idx, at, peer_id, actor, action, outcome, detail, request, prev_hash, hash, sig)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  listAudit: 'SELECT * FROM audit WHERE idx > ? ORDER BY idx LIMIT ?',

  readExists: 'SELECT 1 AS found FROM audit_reads WHERE actor = ? AND action = ? AND window_start = ?',
  insertRead: `INSERT INTO audit_reads (actor, action, window_start, peer_id, first_at, last_at, count, detail)
    VALUES (?, ?, ?, ?, ?, ?, 1, ?)`,
  countRead: `UPDATE audit_reads SET count = count + 1, last_at = MAX(last_at, ?), peer_id = ?, detail = ?
    WHERE actor = ? AND action = ? AND window_start = ?`,
  // Only run when a summary is added, so at most once per admin, op and window.
  pruneReads: `DELETE FROM audit_reads WHERE rowid IN
    (SELECT rowid FROM audit_reads ORDER BY last_at DESC LIMIT -1 OFFSET ${MAX_AUDIT_READ_ROWS})`,
  listReads: 'SELECT * FROM audit_reads ORDER BY last_at DESC LIMIT ?',
} as const

export class SqliteAudit {
  readonly #s: Record<keyof typeof statementSql, StatementSync>
  readonly #write: WriteTransaction

  constructor(db: DatabaseSync, write: WriteTransaction) {
    this.#s = prepareStatements(db, statementSql)
    this.#write = write
  }

  append(entry: AuditEntry, sign: AuditSigner): AuditRecord {
    checkAuditRequest(entry)
    return this.#write(() => {
      const last = this.#s.lastAudit.get()
      const fields = auditFields(
        entry,
        last === undefined ? 1 : integer(last, 'idx') + 1,
        last === undefined ? GENESIS_PREV_HASH : blob(last, 'hash'),
      )
      const hash = auditHash(fields)
      const sig = checkSignature(sign(hash))
      const record: AuditRecord = { ...fields, hash, sig }
      const { index, at, peerId, actor, action, outcome, detail, request, prevHash } = record
      this.#s.insertAudit.run(index, at, peerId, actor, action, outcome, detail, request, prevHash, hash, sig)
      return record
    })
  }

  list(afterIndex: number, limit: number, maxBytes = Number.POSITIVE_INFINITY): AuditRecord[] {
    const out: AuditRecord[] = []
    let bytes = 0
    // Row by row: a page of large records stops being read as soon as it is full.
    for (const row of this.#s.listAudit.iterate(afterIndex, checkLimit(limit))) {
      const record = toAudit(row)
      const size = auditRecordBytes(record)
      if (out.length > 0 && bytes + size > maxBytes) break
      out.push(record)
      bytes += size
    }
    return out
  }

  recordRead(entry: AuditReadEntry): void {
    const { actor, peerId, action, detail, at, windowStart } = entry
    this.#write(() => {
      if (this.#s.readExists.get(actor, action, windowStart) !== undefined) {
        this.#s.countRead.run(at, peerId, detail, actor, action, windowStart)
        return
      }
      this.#s.insertRead.run(actor, action, windowStart, peerId, at, at, detail)
      this.#s.pruneReads.run()
    })
  }

  listReads(limit: number): AuditRead[] {
    return this.#s.listReads.all(checkLimit(limit)).map(toRead)
  }
}

/** A request larger than any frame is a caller bug; refused before anything is written. */
export function checkAuditRequest(entry: AuditEntry): void {
  if (entry.request !== null && entry.request.byteLength > MAX_AUDIT_REQUEST_BYTES) {
    throw new StoreLimitError(
      `audit request is ${entry.request.byteLength} bytes, more than the ${MAX_AUDIT_REQUEST_BYTES}-byte limit`,
    )
  }
}

/** The fields an audit record is hashed over, as stored (detail cut to its bound), at `index` after `prevHash`. */
export function auditFields(
  entry: AuditEntry,
  index: number,
  prevHash: Uint8Array,
): Omit<AuditRecord, 'hash' | 'sig'> {
  return {
    index,
    at: entry.at,
    peerId: entry.peerId,
    actor: entry.actor,
    action: entry.action,
    outcome: entry.outcome,
    detail:
      entry.detail.length > MAX_AUDIT_RECORD_DETAIL
        ? `${entry.detail.slice(0, MAX_AUDIT_RECORD_DETAIL - 1)}…`
        : entry.detail,
    request: entry.request === null ? null : Uint8Array.from(entry.request),
    prevHash: Uint8Array.from(prevHash),
  }
}

/** The signer's result, checked to be a signature before it is stored. */
export function checkSignature(sig: Uint8Array): Uint8Array {
  if (!(sig instanceof Uint8Array) || sig.byteLength !== SIGNATURE_BYTES) {
    throw new TypeError(
      `the audit signer returned ${describeValue(sig)}, expected a ${SIGNATURE_BYTES}-byte signature`,
    )
  }
  return sig
}

export function toRead(row: Row): AuditRead {
  return {
    actor: text(row, 'actor'),
    peerId: text(row, 'peer_id'),
    action: text(row, 'action'),
    windowStart: integer(row, 'window_start'),
    firstAt: integer(row, 'first_at'),
    lastAt: integer(row, 'last_at'),
    count: integer(row, 'count'),
    detail: text(row, 'detail'),
  }
}
