/**
 * What a fuzz run left in the coordinator's store, read with a read-only
 * SQLite connection beside the running coordinator: the database's size and
 * the audit records added since a given index, with their bytes and a
 * breakdown by action, outcome and refusal code.
 */
import { stat } from 'node:fs/promises'
import { DatabaseSync } from 'node:sqlite'

export interface StoreSize {
  /** page_count × page_size as the newest snapshot sees it (the WAL included) */
  logicalBytes: number
  /** fleet.db plus fleet.db-wal on disk */
  fileBytes: number
  auditRecords: number
  lastAuditIndex: number
}

export interface AuditGrowth {
  records: number
  /** The bytes of the added rows' columns */
  bytes: number
  /** `action outcome code` → records, most first */
  breakdown: [string, number][]
}

const fileSize = (path: string) =>
  stat(path).then(
    (s) => s.size,
    () => 0,
  )

function withDb<T>(path: string, read: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(path, { readOnly: true })
  try {
    return read(db)
  } finally {
    db.close()
  }
}

export async function storeSize(path: string): Promise<StoreSize> {
  const fileBytes = (await fileSize(path)) + (await fileSize(`${path}-wal`))
  return withDb(path, (db) => {
    const pages = db.prepare('PRAGMA page_count').get() as { page_count: number }
    const size = db.prepare('PRAGMA page_size').get() as { page_size: number }
    const audit = db.prepare('SELECT COUNT(*) AS n, IFNULL(MAX(idx), 0) AS last FROM audit').get() as {
      n: number
      last: number
    }
    return {
      logicalBytes: pages.page_count * size.page_size,
      fileBytes,
      auditRecords: audit.n,
      lastAuditIndex: audit.last,
    }
  })
}

export function auditSince(path: string, afterIndex: number): AuditGrowth {
  return withDb(path, (db) => {
    const total = db
      .prepare(
        `SELECT COUNT(*) AS n, IFNULL(SUM(8 + LENGTH(peer_id) + IFNULL(LENGTH(actor), 0) + LENGTH(action)
           + LENGTH(outcome) + LENGTH(detail) + IFNULL(LENGTH(request), 0) + LENGTH(prev_hash) + LENGTH(hash)
           + LENGTH(sig)), 0) AS bytes FROM audit WHERE idx > ?`,
      )
      .get(afterIndex) as { n: number; bytes: number }
    const rows = db
      .prepare(
        `SELECT action || ' ' || outcome || ' ' ||
           CASE WHEN outcome <> 'ok' AND INSTR(detail, ':') > 0 THEN SUBSTR(detail, 1, INSTR(detail, ':') - 1) ELSE '-' END AS what,
           COUNT(*) AS n
         FROM audit WHERE idx > ? GROUP BY what ORDER BY n DESC`,
      )
      .all(afterIndex) as { what: string; n: number }[]
    return { records: total.n, bytes: total.bytes, breakdown: rows.map((r) => [r.what, r.n]) }
  })
}
