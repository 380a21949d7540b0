/**
 * The audit log in the PostgreSQL store: the counterpart of sqlite-audit.ts.
 * Appends take the 'audit' advisory lock for their transaction, so however
 * many coordinators append at once each reads the head only after the one
 * before it committed, and the log stays one linear hash chain (the primary key
 * on idx would refuse a fork, but a refused admin action is not what we want).
 */
import { type AuditRead, auditHash, auditRecordBytes, GENESIS_PREV_HASH } from '../protocol/index.ts'
import type { PgDb } from './pg-db.ts'
import { auditFields, checkAuditRequest, checkSignature, toRead } from './sqlite-audit.ts'
import { blob, checkLimit, integer, toAudit } from './sqlite-rows.ts'
import {
  type AuditEntry,
  type AuditReadEntry,
  type AuditRecord,
  type AuditSigner,
  MAX_AUDIT_READ_ROWS,
} from './store.ts'

const SQL = {
  lastAudit: 'SELECT idx, hash FROM audit ORDER BY idx DESC LIMIT 1',
  insertAudit: `INSERT INTO audit (idx, at, peer_id, actor, action, outcome, detail, request, prev_hash, hash, sig)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
  listAudit: 'SELECT * FROM audit WHERE idx > $1 ORDER BY idx LIMIT $2',
  // One statement: counts into the summary, or adds it; inserted tells which (xmax is 0 for a new row).
  upsertRead: `INSERT INTO audit_reads (actor, action, window_start, peer_id, first_at, last_at, count, detail)
    VALUES ($1, $2, $3, $4, $5, $5, 1, $6)
    ON CONFLICT (actor, action, window_start) DO UPDATE SET count = audit_reads.count + 1,
      last_at = GREATEST(audit_reads.last_at, excluded.last_at), peer_id = excluded.peer_id,
      detail = excluded.detail
    RETURNING (xmax = 0)::int4 AS inserted`,
  pruneReads: `DELETE FROM audit_reads WHERE (actor, action, window_start) IN
    (SELECT actor, action, window_start FROM audit_reads ORDER BY last_at DESC OFFSET ${MAX_AUDIT_READ_ROWS})`,
  listReads: 'SELECT * FROM audit_reads ORDER BY last_at DESC LIMIT $1',
} as const

/** Rows read per query while cutting a page by bytes. */
const PAGE_CHUNK = 100

export class PgAudit {
  readonly #db: PgDb

  constructor(db: PgDb) {
    this.#db = db
  }

  async append(entry: AuditEntry, sign: AuditSigner): Promise<AuditRecord> {
    checkAuditRequest(entry)
    return this.#db.transaction(['audit'], async (tx) => {
      const [last] = await tx.rows(SQL.lastAudit)
      const fields = auditFields(
        entry,
        last === undefined ? 1 : integer(last, 'idx') + 1,
        last === undefined ? GENESIS_PREV_HASH : blob(last, 'hash'),
      )
      const hash = auditHash(fields)
      const sig = checkSignature(sign(hash))
      const record: AuditRecord = { ...fields, hash, sig }
      const { index, at, peerId, actor, action, outcome, detail, request, prevHash } = record
      await tx.run(SQL.insertAudit, [
        index,
        at,
        peerId,
        actor,
        action,
        outcome,
        detail,
        request,
        prevHash,
        hash,
        sig,
      ])
      return record
    })
  }

  async list(afterIndex: number, limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<AuditRecord[]> {
    const out: AuditRecord[] = []
    let bytes = 0
    let after = afterIndex
    // In chunks: a page of large records stops being read soon after it is full.
    while (out.length < checkLimit(limit)) {
      const rows = await this.#db.sql.rows(SQL.listAudit, [after, Math.min(PAGE_CHUNK, limit - out.length)])
      for (const row of rows) {
        const record = toAudit(row)
        const size = auditRecordBytes(record)
        if (out.length > 0 && bytes + size > maxBytes) return out
        out.push(record)
        bytes += size
        after = record.index
      }
      if (rows.length < PAGE_CHUNK) break
    }
    return out
  }

  async recordRead(entry: AuditReadEntry): Promise<void> {
    const { actor, peerId, action, detail, at, windowStart } = entry
    await this.#db.transaction([], async (tx) => {
      const [row] = await tx.rows(SQL.upsertRead, [actor, action, windowStart, peerId, at, detail])
      // Only when a summary is added, so at most once per admin, op and window.
      if (row?.inserted === 1) await tx.run(SQL.pruneReads)
    })
  }

  async listReads(limit: number): Promise<AuditRead[]> {
    return (await this.#db.sql.rows(SQL.listReads, [checkLimit(limit)])).map(toRead)
  }
}
