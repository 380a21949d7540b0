/**
 * Rollouts in waves in the embedded store (table rollouts): the statements and
 * methods behind FleetStore's `rollouts`. Every change to a rollout and to the
 * desired states it sets is one transaction, so a coordinator killed at any
 * point restarts from a state where the stored wave and the machines' desired
 * manifests agree.
 */

import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { ROLLOUT_STATES, type RolloutState, wavePolicySchema } from '../protocol/index.ts'
import { checkNextSequence } from './sequence-rule.ts'
import type { WriteTransaction } from './sqlite-narinfos.ts'
import {
  checkLimit,
  integer,
  json,
  manifestRow,
  mapRow,
  nullable,
  prepareStatements,
  type Row,
  required,
  text,
  toManifest,
} from './sqlite-rows.ts'
import {
  type DesiredChange,
  type ManifestRecord,
  type NewManifest,
  type NewRollout,
  type RolloutChange,
  type RolloutRecord,
  type RolloutStore,
  StoreConflictError,
  StoreSchemaError,
} from './store.ts'

const statementSql = {
  maxSequence: 'SELECT COALESCE(MAX(sequence), 0) AS max FROM manifests',
  machineExists: 'SELECT 1 AS found FROM machines WHERE name = ?',
  insertManifest: `INSERT INTO manifests (id, sequence, rollout_id, generation, targets, envelope,
    submitted_by, submitted_at, expires_at, machines) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  desiredOf: 'SELECT manifest_id FROM desired WHERE machine = ?',
  setDesired: `INSERT INTO desired (machine, manifest_id) VALUES (?, ?)
    ON CONFLICT (machine) DO UPDATE SET manifest_id = excluded.manifest_id`,
  clearDesired: 'DELETE FROM desired WHERE machine = ?',
  getManifest: 'SELECT * FROM manifests WHERE id = ?',
  insert: `INSERT INTO rollouts (id, manifest_id, policy, plan, previous, rollbacks, state, reason, wave,
    wave_started_at, soak_started_at, rolled_back, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, 0, ?, NULL, 0, ?, ?)`,
  get: 'SELECT * FROM rollouts WHERE id = ?',
  list: 'SELECT * FROM rollouts ORDER BY created_at DESC, id LIMIT ?',
  active: "SELECT * FROM rollouts WHERE state IN ('running', 'paused') ORDER BY created_at",
  update: `UPDATE rollouts SET state = ?, reason = ?, wave = ?, wave_started_at = ?, soak_started_at = ?,
    rolled_back = ?, updated_at = ? WHERE id = ?`,
} as const

export class SqliteRollouts implements RolloutStore {
  readonly #s: Record<keyof typeof statementSql, StatementSync>
  readonly #write: WriteTransaction

  constructor(db: DatabaseSync, write: WriteTransaction) {
    this.#s = prepareStatements(db, statementSql)
    this.#write = write
  }

  async create(input: NewRollout): Promise<RolloutRecord> {
    return this.#write(() => this.createInTransaction(input))
  }

  /** create's work, inside a write transaction the caller holds (the store's bundle). */
  createInTransaction(input: NewRollout): RolloutRecord {
    const { release, rollbacks, policy, plan, at } = input
    const machines = plan.flat()
    const max = integer(required(this.#s.maxSequence.get(), 'manifests'), 'max')
    for (const m of [release, ...rollbacks.map((r) => r.manifest)]) checkNextSequence(m.sequence, max)
    for (const machine of new Set([...machines, ...rollbacks.flatMap((r) => r.machines)]))
      if (this.#s.machineExists.get(machine) === undefined) throw unknownMachine(machine)
    const previous: Record<string, string | null> = {}
    for (const machine of machines) {
      const row = this.#s.desiredOf.get(machine)
      previous[machine] = row === undefined ? null : text(row, 'manifest_id')
    }
    this.#insertManifest(release, [...machines].sort())
    for (const r of rollbacks) this.#insertManifest(r.manifest, [...r.machines].sort())
    const held = rollbacks.map((r) => ({ manifestId: r.manifest.id, machines: [...r.machines].sort() }))
    this.#s.insert.run(
      release.rolloutId,
      release.id,
      JSON.stringify(policy),
      JSON.stringify(plan),
      JSON.stringify(previous),
      JSON.stringify(held),
      at,
      at,
      at,
    )
    for (const machine of plan[0] ?? []) this.#s.setDesired.run(machine, release.id)
    return toRollout(required(this.#s.get.get(release.rolloutId), 'rollouts'))
  }

  /**
   * The store's addManifest (a rollout not in waves), inside a write transaction the
   * caller holds: above every stored sequence, to enrolled machines only.
   */
  addManifestInTransaction(record: NewManifest, machines: readonly string[]): ManifestRecord {
    const targets = [...new Set(machines)].sort()
    checkNextSequence(record.sequence, integer(required(this.#s.maxSequence.get(), 'manifests'), 'max'))
    for (const machine of targets)
      if (this.#s.machineExists.get(machine) === undefined) throw unknownMachine(machine)
    this.#insertManifest(record, targets)
    for (const machine of targets) this.#s.setDesired.run(machine, record.id)
    return toManifest(required(this.#s.getManifest.get(record.id), 'manifests'))
  }

  #insertManifest(m: NewManifest, machines: string[]): void {
    this.#s.insertManifest.run(...manifestRow(m, machines))
  }

  async get(id: string): Promise<RolloutRecord | undefined> {
    return mapRow(this.#s.get.get(id), toRollout)
  }

  async list(limit: number): Promise<RolloutRecord[]> {
    return this.#s.list.all(checkLimit(limit)).map(toRollout)
  }

  async active(): Promise<RolloutRecord[]> {
    return this.#s.active.all().map(toRollout)
  }

  async transition(
    id: string,
    expect: Pick<RolloutRecord, 'state' | 'wave'>,
    change: RolloutChange,
    desired: readonly DesiredChange[],
    at: number,
  ): Promise<RolloutRecord | undefined> {
    return this.#write(() => {
      const row = this.#s.get.get(id)
      if (row === undefined) return undefined
      const now = toRollout(row)
      if (now.state !== expect.state || now.wave !== expect.wave) return undefined
      const next = { ...now, ...change }
      this.#s.update.run(
        next.state,
        next.reason,
        next.wave,
        next.waveStartedAt,
        next.soakStartedAt,
        next.rolledBack ? 1 : 0,
        at,
        id,
      )
      for (const d of desired) {
        if (d.manifestId === null) this.#s.clearDesired.run(d.machine)
        else this.#s.setDesired.run(d.machine, d.manifestId)
      }
      return toRollout(required(this.#s.get.get(id), 'rollouts'))
    })
  }
}

export function toRollout(row: Row): RolloutRecord {
  const state = text(row, 'state')
  if (!(ROLLOUT_STATES as readonly string[]).includes(state))
    throw new StoreSchemaError(`rollout state "${state}" is unknown; the database is damaged`)
  const policy = wavePolicySchema.safeParse(json<unknown>(row, 'policy'))
  if (!policy.success) throw new StoreSchemaError('a rollout policy is not valid; the database is damaged')
  return {
    id: text(row, 'id'),
    manifestId: text(row, 'manifest_id'),
    policy: policy.data,
    plan: json<string[][]>(row, 'plan'),
    previous: json<Record<string, string | null>>(row, 'previous'),
    rollbacks: json<RolloutRecord['rollbacks']>(row, 'rollbacks'),
    state: state as RolloutState,
    reason: row.reason === null ? null : text(row, 'reason'),
    wave: integer(row, 'wave'),
    waveStartedAt: integer(row, 'wave_started_at'),
    soakStartedAt: nullable(row, 'soak_started_at', integer),
    rolledBack: integer(row, 'rolled_back') === 1,
    createdAt: integer(row, 'created_at'),
    updatedAt: integer(row, 'updated_at'),
  }
}

export function unknownMachine(name: string): StoreConflictError {
  return new StoreConflictError('unknown-machine', `no machine named "${name}" is enrolled`)
}
