/**
 * Agents' status reports in the PostgreSQL store: group commit of many reports
 * in one durable transaction, each with its own outcome, and the reads of
 * reports. The (machine, seq) primary key decides between two coordinators
 * storing one report at once (the later sees a duplicate), and the latest
 * status moves only forward in one upsert.
 */

import type { StatusReport } from '../protocol/index.ts'
import type { PgDb } from './pg-db.ts'
import { unknownMachine } from './sqlite-rollouts.ts'
import { checkLimit, integer, text, toStatus } from './sqlite-rows.ts'
import { type StatusRecord, StoreConflictError } from './store.ts'

/** As sqlite-store.ts: how many of a machine's newest reports the log and rollout lookups search. */
const LOG_REPORT_LOOKBACK = 1000

const SQL = {
  enrolled: 'SELECT name FROM machines WHERE name = ANY($1::text[])',
  // The whole batch in one statement, its rows in the order (machine, seq) every coordinator locks them in.
  insertStatuses: `INSERT INTO statuses (machine, seq, report, envelope, received_at, manifest_id, rollout_id,
    carries_log)
    SELECT machine, seq, report, envelope, received_at, manifest_id, rollout_id, carries_log
    FROM unnest($1::text[], $2::int8[], $3::text[], $4::bytea[], $5::int8[], $6::text[], $7::text[], $8::bool[])
      WITH ORDINALITY AS t(machine, seq, report, envelope, received_at, manifest_id, rollout_id, carries_log, ord)
    ORDER BY machine, seq, ord
    ON CONFLICT (machine, seq) DO NOTHING
    RETURNING machine, seq`,
  advanceLatest: `INSERT INTO latest_status (machine, seq)
    SELECT machine, max(seq) FROM unnest($1::text[], $2::int8[]) AS t(machine, seq) GROUP BY machine ORDER BY machine
    ON CONFLICT (machine) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > latest_status.seq`,
  sameStatus: 'SELECT (envelope = $1)::int4 AS same FROM statuses WHERE machine = $2 AND seq = $3',
  lastStatusSeq: 'SELECT seq FROM latest_status WHERE machine = $1',
  latestStatus: `SELECT s.* FROM latest_status l JOIN statuses s ON s.machine = l.machine AND s.seq = l.seq
    WHERE l.machine = $1`,
  latestStatuses:
    'SELECT s.* FROM latest_status l JOIN statuses s ON s.machine = l.machine AND s.seq = l.seq',
  statusHistory: 'SELECT * FROM statuses WHERE machine = $1 ORDER BY seq DESC LIMIT $2',
  // As sqlite-store.ts, over the columns statusKeys copied out of the report.
  latestLogReport: `SELECT * FROM (SELECT * FROM statuses WHERE machine = $1 ORDER BY seq DESC LIMIT ${LOG_REPORT_LOOKBACK}) s
    WHERE manifest_id IS NOT DISTINCT FROM $2::text AND carries_log ORDER BY seq DESC LIMIT 1`,
  latestRolloutReport: `SELECT * FROM (SELECT * FROM statuses WHERE machine = $1 ORDER BY seq DESC LIMIT ${LOG_REPORT_LOOKBACK}) s
    WHERE rollout_id = $2 ORDER BY seq DESC LIMIT 1`,
} as const

type Outcome = 'stored' | 'duplicate' | StoreConflictError

/**
 * The columns of statuses copied out of a report, in the order of the INSERT: its
 * manifest and rollout, and whether it carries a log or a reboot flag (as SQLite's
 * json_type, a key present in the stored JSON).
 */
export function statusKeys(report: StatusReport): [string | null, string | null, boolean] {
  return [
    report.manifestId,
    report.rolloutId,
    report.log !== undefined || report.rebootRequired !== undefined,
  ]
}

export class PgStatuses {
  readonly #db: PgDb

  constructor(db: PgDb) {
    this.#db = db
  }

  record(records: readonly StatusRecord[]): Promise<Outcome[]> {
    return this.#db.transaction([], async (tx) => {
      const names = [...new Set(records.map((r) => r.machine))]
      const enrolled = new Set((await tx.rows(SQL.enrolled, [names])).map((row) => text(row, 'name')))
      const out: Outcome[] = new Array(records.length)
      const known: { record: StatusRecord; i: number }[] = []
      for (const [i, record] of records.entries()) {
        if (enrolled.has(record.machine)) known.push({ record, i })
        else out[i] = unknownMachine(record.machine)
      }
      if (known.length === 0) return out
      // One round trip for the batch, not two per report. Rows are locked in one order (machine, seq) by
      // every coordinator, so two batches never deadlock; of one report sent twice in a batch the first is stored.
      const column = <T>(pick: (r: StatusRecord) => T) => known.map(({ record }) => pick(record))
      const keys = column((r) => statusKeys(r.report))
      const inserted = await tx.rows(SQL.insertStatuses, [
        column((r) => r.machine),
        column((r) => r.seq),
        column((r) => JSON.stringify(r.report)),
        column((r) => r.envelope),
        column((r) => r.receivedAt),
        keys.map((k) => k[0]),
        keys.map((k) => k[1]),
        keys.map((k) => k[2]),
      ])
      const fresh = new Set(inserted.map((row) => `${text(row, 'machine')}\n${integer(row, 'seq')}`))
      const stored: StatusRecord[] = []
      for (const { record, i } of known) {
        const key = `${record.machine}\n${record.seq}`
        if (fresh.delete(key)) {
          out[i] = 'stored'
          stored.push(record)
          continue
        }
        // there before, or earlier in this batch: the same report again, or another under its seq
        const [row] = await tx.rows(SQL.sameStatus, [record.envelope, record.machine, record.seq])
        out[i] = row?.same === 1 ? 'duplicate' : seqReused(record)
      }
      if (stored.length > 0)
        await tx.run(SQL.advanceLatest, [stored.map((r) => r.machine), stored.map((r) => r.seq)])
      return out
    })
  }

  async lastSeq(machine: string): Promise<number> {
    const [row] = await this.#db.sql.rows(SQL.lastStatusSeq, [machine])
    return row === undefined ? 0 : integer(row, 'seq')
  }

  async latest(machine: string): Promise<StatusRecord | undefined> {
    const [row] = await this.#db.sql.rows(SQL.latestStatus, [machine])
    return row === undefined ? undefined : toStatus(row)
  }

  async latestAll(): Promise<Map<string, StatusRecord>> {
    const out = new Map<string, StatusRecord>()
    for (const row of await this.#db.sql.rows(SQL.latestStatuses)) {
      const status = toStatus(row)
      out.set(status.machine, status)
    }
    return out
  }

  async history(machine: string, limit: number): Promise<StatusRecord[]> {
    return (await this.#db.sql.rows(SQL.statusHistory, [machine, checkLimit(limit)])).map(toStatus)
  }

  async latestRolloutReport(machine: string, rolloutId: string): Promise<StatusRecord | undefined> {
    const [row] = await this.#db.sql.rows(SQL.latestRolloutReport, [machine, rolloutId])
    return row === undefined ? undefined : toStatus(row)
  }

  async latestLogReport(machine: string): Promise<StatusRecord | undefined> {
    const latest = await this.latest(machine)
    if (latest === undefined) return undefined
    const [row] = await this.#db.sql.rows(SQL.latestLogReport, [machine, latest.report.manifestId ?? null])
    return row === undefined ? latest : toStatus(row)
  }
}

function seqReused({ machine, seq }: StatusRecord): StoreConflictError {
  return new StoreConflictError('seq-reused', `${machine} reused report seq ${seq} for a different report`)
}
