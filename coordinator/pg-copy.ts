/**
 * Moves a fleet from its SQLite file to PostgreSQL (`fleetmesh store copy`):
 * every row of every table, unchanged, so the audit chain (hashes, signatures,
 * indexes), enrollment tokens, nonces and report history carry over exactly
 * and the log verifies against the same coordinator key afterwards. The source
 * is read in one snapshot (a read transaction) and first brought to the
 * current schema, as a coordinator starting on it would; the target is written
 * in one transaction holding every advisory lock, and must be empty, so a copy
 * cut short leaves nothing behind and never mixes two fleets.
 */
import { DatabaseSync } from 'node:sqlite'
import { CodedError } from '../lib/index.ts'
import type { StatusReport } from '../protocol/index.ts'
import { createPool, PgDb, type PgOptions, redactUrl } from './pg-db.ts'
import { connectError, migratePostgres } from './pg-schema.ts'
import { statusKeys } from './pg-statuses.ts'
import { openSqliteStore } from './sqlite-store.ts'

/** Tables in an order where every row's references are copied before it. */
export const COPIED_TABLES = [
  'fleet',
  'machines',
  'used_tokens',
  'manifests',
  'desired',
  'statuses',
  'latest_status',
  'audit',
  'audit_reads',
  'revocations',
  'revocation_log',
  'nonces',
  'nix_narinfos',
  'rollouts',
  'machine_tags',
] as const

/** Rows per INSERT: well below PostgreSQL's 65,535 parameters for the widest table. */
const BATCH_ROWS = 500

export class StoreCopyError extends CodedError<'target-not-empty' | 'no-fleet'> {
  override name = 'StoreCopyError'
}

export interface CopyReport {
  /** Rows copied per table. */
  rows: Record<string, number>
  /** The audit log's last index (0 when empty). */
  auditHead: number
}

/** A SQLite statuses row with the columns PostgreSQL's copies out of the report. */
function withStatusKeys(row: Record<string, unknown>): Record<string, unknown> {
  const [manifest_id, rollout_id, carries_log] = statusKeys(JSON.parse(String(row.report)) as StatusReport)
  return { ...row, manifest_id, rollout_id, carries_log }
}

export async function copySqliteToPostgres(
  sqlitePath: string,
  url: string,
  options: PgOptions = {},
): Promise<CopyReport> {
  // Brings the file to the current schema (and refuses one that is not a fleetmesh store).
  await (await openSqliteStore(sqlitePath, { create: false })).close()
  const source = new DatabaseSync(sqlitePath, { readOnly: true })
  const db = new PgDb(createPool(url, options))
  try {
    try {
      await migratePostgres(db, url)
    } catch (err) {
      throw connectError(url, err)
    }
    source.exec('BEGIN') // one snapshot of the source, however long the copy takes
    const fleet = source.prepare('SELECT count(*) AS n FROM fleet').get()
    if (fleet?.n !== 1)
      throw new StoreCopyError('no-fleet', `${sqlitePath} holds no fleet: there is nothing to copy`)
    const rows: Record<string, number> = {}
    await db.transaction(['fleet', 'audit', 'revocations', 'nix'], async (tx) => {
      for (const table of COPIED_TABLES) {
        const [row] = await tx.rows(`SELECT EXISTS (SELECT 1 FROM ${table})::int4 AS found`)
        if (row?.found === 1)
          throw new StoreCopyError(
            'target-not-empty',
            `${redactUrl(url)} already holds data (table ${table}); copy only into an empty database`,
          )
      }
      for (const table of COPIED_TABLES) {
        let batch: Record<string, unknown>[] = []
        let count = 0
        const flush = async () => {
          if (batch.length === 0) return
          const columns = Object.keys(batch[0] as object)
          const values = batch.flatMap((r) => columns.map((c) => r[c]))
          const tuples = batch.map(
            (_, i) => `(${columns.map((_c, j) => `$${i * columns.length + j + 1}`).join(', ')})`,
          )
          await tx.run(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`, values)
          count += batch.length
          batch = []
        }
        for (const r of source.prepare(`SELECT * FROM ${table}`).iterate()) {
          batch.push(table === 'statuses' ? withStatusKeys(r) : r)
          if (batch.length >= BATCH_ROWS) await flush()
        }
        await flush()
        rows[table] = count
      }
    })
    const head = source.prepare('SELECT COALESCE(MAX(idx), 0) AS idx FROM audit').get()
    return { rows, auditHead: Number(head?.idx ?? 0) }
  } finally {
    if (source.isTransaction) source.exec('COMMIT')
    source.close()
    await db.close()
  }
}
