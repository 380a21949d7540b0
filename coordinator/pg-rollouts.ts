/**
 * Manifests and rollouts in waves in the PostgreSQL store: the counterpart of
 * sqlite-rollouts.ts, with the same rows decoded by the same functions. Every
 * write holds the 'fleet' advisory lock, so the manifest sequence rises
 * strictly however many coordinators submit at once: the later transaction
 * reads the maximum only after the earlier one committed, and is refused
 * 'stale-sequence' if it no longer lies above it.
 */
import type { PgDb, Sql } from './pg-db.ts'
import { checkNextSequence } from './sequence-rule.ts'
import { toRollout, unknownMachine } from './sqlite-rollouts.ts'
import { checkLimit, integer, manifestRow, required, text, toManifest } from './sqlite-rows.ts'
import type {
  DesiredChange,
  ManifestRecord,
  NewManifest,
  NewRollout,
  RolloutChange,
  RolloutRecord,
  RolloutStore,
} from './store.ts'

const SQL = {
  maxSequence: 'SELECT COALESCE(MAX(sequence), 0) AS max FROM manifests',
  enrolled: 'SELECT name FROM machines WHERE name = ANY($1::text[])',
  insertManifest: `INSERT INTO manifests (id, sequence, rollout_id, generation, targets, envelope,
    submitted_by, submitted_at, expires_at, machines) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
  desiredOf: 'SELECT machine, manifest_id FROM desired WHERE machine = ANY($1::text[])',
  setDesired: `INSERT INTO desired (machine, manifest_id) SELECT unnest($1::text[]), $2
    ON CONFLICT (machine) DO UPDATE SET manifest_id = excluded.manifest_id`,
  clearDesired: 'DELETE FROM desired WHERE machine = $1',
  getManifest: 'SELECT * FROM manifests WHERE id = $1',
  insert: `INSERT INTO rollouts (id, manifest_id, policy, plan, previous, rollbacks, state, reason, wave,
    wave_started_at, soak_started_at, rolled_back, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'running', NULL, 0, $7, NULL, 0, $8, $9)`,
  get: 'SELECT * FROM rollouts WHERE id = $1',
  getForUpdate: 'SELECT * FROM rollouts WHERE id = $1 FOR UPDATE',
  list: 'SELECT * FROM rollouts ORDER BY created_at DESC, id LIMIT $1',
  active: "SELECT * FROM rollouts WHERE state IN ('running', 'paused') ORDER BY created_at",
  update: `UPDATE rollouts SET state = $1, reason = $2, wave = $3, wave_started_at = $4, soak_started_at = $5,
    rolled_back = $6, updated_at = $7 WHERE id = $8`,
} as const

/** Throws 'unknown-machine' naming the first of `machines` not enrolled. */
export async function checkEnrolled(tx: Sql, machines: readonly string[]): Promise<void> {
  const unique = [...new Set(machines)]
  if (unique.length === 0) return
  const found = new Set((await tx.rows(SQL.enrolled, [unique])).map((row) => text(row, 'name')))
  const missing = unique.find((m) => !found.has(m))
  if (missing !== undefined) throw unknownMachine(missing)
}

export async function setDesired(tx: Sql, machines: readonly string[], manifestId: string): Promise<void> {
  if (machines.length > 0) await tx.run(SQL.setDesired, [machines, manifestId])
}

async function maxSequence(tx: Sql): Promise<number> {
  return integer(required((await tx.rows(SQL.maxSequence))[0], 'manifests'), 'max')
}

async function insertManifest(tx: Sql, m: NewManifest, machines: string[]): Promise<void> {
  await tx.run(SQL.insertManifest, manifestRow(m, machines))
}

/** addManifest's work inside a transaction holding the 'fleet' lock. */
export async function addManifestInTransaction(
  tx: Sql,
  record: NewManifest,
  machines: readonly string[],
): Promise<ManifestRecord> {
  const targets = [...new Set(machines)].sort()
  checkNextSequence(record.sequence, await maxSequence(tx))
  await checkEnrolled(tx, targets)
  await insertManifest(tx, record, targets)
  await setDesired(tx, targets, record.id)
  return toManifest(required((await tx.rows(SQL.getManifest, [record.id]))[0], 'manifests'))
}

/** rollouts.create's work inside a transaction holding the 'fleet' lock. */
export async function createRolloutInTransaction(tx: Sql, input: NewRollout): Promise<RolloutRecord> {
  const { release, rollbacks, policy, plan, at } = input
  const machines = plan.flat()
  const max = await maxSequence(tx)
  for (const m of [release, ...rollbacks.map((r) => r.manifest)]) checkNextSequence(m.sequence, max)
  await checkEnrolled(tx, [...machines, ...rollbacks.flatMap((r) => r.machines)])
  const desired = new Map(
    (await tx.rows(SQL.desiredOf, [machines])).map((row) => [text(row, 'machine'), text(row, 'manifest_id')]),
  )
  const previous: Record<string, string | null> = {}
  for (const machine of machines) previous[machine] = desired.get(machine) ?? null
  await insertManifest(tx, release, [...machines].sort())
  for (const r of rollbacks) await insertManifest(tx, r.manifest, [...r.machines].sort())
  const held = rollbacks.map((r) => ({ manifestId: r.manifest.id, machines: [...r.machines].sort() }))
  await tx.run(SQL.insert, [
    release.rolloutId,
    release.id,
    JSON.stringify(policy),
    JSON.stringify(plan),
    JSON.stringify(previous),
    JSON.stringify(held),
    at,
    at,
    at,
  ])
  await setDesired(tx, plan[0] ?? [], release.id)
  return toRollout(required((await tx.rows(SQL.get, [release.rolloutId]))[0], 'rollouts'))
}

export class PgRollouts implements RolloutStore {
  readonly #db: PgDb

  constructor(db: PgDb) {
    this.#db = db
  }

  create(input: NewRollout): Promise<RolloutRecord> {
    return this.#db.transaction(['fleet'], (tx) => createRolloutInTransaction(tx, input))
  }

  async get(id: string): Promise<RolloutRecord | undefined> {
    const [row] = await this.#db.sql.rows(SQL.get, [id])
    return row === undefined ? undefined : toRollout(row)
  }

  async list(limit: number): Promise<RolloutRecord[]> {
    return (await this.#db.sql.rows(SQL.list, [checkLimit(limit)])).map(toRollout)
  }

  async active(): Promise<RolloutRecord[]> {
    return (await this.#db.sql.rows(SQL.active)).map(toRollout)
  }

  transition(
    id: string,
    expect: Pick<RolloutRecord, 'state' | 'wave'>,
    change: RolloutChange,
    desired: readonly DesiredChange[],
    at: number,
  ): Promise<RolloutRecord | undefined> {
    return this.#db.transaction(['fleet'], async (tx) => {
      const [row] = await tx.rows(SQL.getForUpdate, [id])
      if (row === undefined) return undefined
      const now = toRollout(row)
      if (now.state !== expect.state || now.wave !== expect.wave) return undefined
      const next = { ...now, ...change }
      await tx.run(SQL.update, [
        next.state,
        next.reason,
        next.wave,
        next.waveStartedAt,
        next.soakStartedAt,
        next.rolledBack ? 1 : 0,
        at,
        id,
      ])
      for (const d of desired) {
        if (d.manifestId === null) await tx.run(SQL.clearDesired, [d.machine])
        else await setDesired(tx, [d.machine], d.manifestId)
      }
      return toRollout(required((await tx.rows(SQL.get, [id]))[0], 'rollouts'))
    })
  }
}
