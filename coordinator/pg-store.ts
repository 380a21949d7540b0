/**
 * A FleetStore in PostgreSQL, which several coordinators can share: every
 * guarantee of the embedded store (sqlite-store.ts) holds across processes.
 *
 * - Durability: every session runs with synchronous_commit on, and a method
 *   resolves only after its COMMIT returned, so an acknowledged report is on
 *   the server's disk.
 * - Rules that read before they write are one transaction each, serialised where
 *   two coordinators could interleave by a transaction-scoped advisory lock
 *   (pg-db.ts LOCKS): the audit chain, the manifest sequence with enrollments and
 *   desired states, the revocation list, the Nix cache. Unique constraints back
 *   them: a token's nonce, a (machine, seq) report, a replay nonce.
 * - Rows decode through the same functions as SQLite's (sqlite-rows.ts): JSON is
 *   stored as text, int8 parses to a checked JS number, bytea to a Uint8Array.
 *
 * @example
 *
 * ```ts
 * const store = await openPostgresStore('postgres://fleetmesh@db.internal/fleet', { poolSize: 10 })
 * ```
 *
 * Status reports are in pg-statuses.ts, manifests and rollouts in pg-rollouts.ts,
 * the audit log in pg-audit.ts, the revocation list and tag records in
 * pg-lists.ts, the Nix cache's narinfos in pg-narinfos.ts, the schema in pg-schema.ts.
 */
import { type AuditRead, targetsMachine } from '../protocol/index.ts'
import { PgAudit } from './pg-audit.ts'
import { createPool, PgDb, type PgOptions, type Sql, sqlState } from './pg-db.ts'
import { applyTagsInTransaction, dropTagsInTransaction, PgMachineTags, PgRevocations } from './pg-lists.ts'
import { PgNarInfos } from './pg-narinfos.ts'
import { PgClusterChannel } from './pg-notify.ts'
import {
  addManifestInTransaction,
  createRolloutInTransaction,
  PgRollouts,
  setDesired,
} from './pg-rollouts.ts'
import { connectError, migratePostgres } from './pg-schema.ts'
import { PgStatuses } from './pg-statuses.ts'
import { unknownMachine } from './sqlite-rollouts.ts'
import { checkLimit, integer, type Row, required, text, toMachine, toManifest } from './sqlite-rows.ts'
import type { TagChange } from './sqlite-tags.ts'
import {
  type AuditEntry,
  type AuditReadEntry,
  type AuditRecord,
  type AuditSigner,
  type EnrollMachineInput,
  type FleetInfo,
  type FleetStore,
  type MachineRecord,
  type ManifestRecord,
  type NarInfoClosure,
  type NarInfoCollection,
  type NarInfoRecord,
  type NewManifest,
  type NewNarInfo,
  type StatusRecord,
  StoreConflictError,
  type TouchInput,
} from './store.ts'
import type { BundleOutcome, BundleStep } from './store-bundle.ts'

export { PgStoreError, type PgStoreErrorCode, redactUrl } from './pg-db.ts'
export { PG_SCHEMA_VERSION } from './pg-schema.ts'

/** As sqlite-store.ts: the newest unexpired manifests an enrolling machine looks through. */
const INHERIT_LOOKBACK = 1000

const SQL = {
  getFleet: 'SELECT fleet_id, fleet_root FROM fleet WHERE singleton = 1',
  insertFleet:
    'INSERT INTO fleet (singleton, fleet_id, fleet_root) VALUES (1, $1, $2) ON CONFLICT DO NOTHING',

  machineByName: 'SELECT * FROM machines WHERE name = $1',
  machineByPeer: 'SELECT * FROM machines WHERE peer_id = $1',
  listMachines: 'SELECT * FROM machines ORDER BY name COLLATE "C"',
  insertMachine: `INSERT INTO machines (name, peer_id, public_key, tags, facts, enrolled_at)
    VALUES ($1, $2, $3, $4, $5, $6)`,
  reenrollMachine: 'UPDATE machines SET tags = $1, facts = $2, enrolled_at = $3 WHERE name = $4',
  touchMachine:
    'UPDATE machines SET last_seen = $1, path = $2, transport = $3, agent_version = coalesce($4, agent_version) WHERE name = $5',
  tokenUsed: 'SELECT 1 AS found FROM used_tokens WHERE nonce = $1',
  useToken: 'INSERT INTO used_tokens (nonce, machine, used_at) VALUES ($1, $2, $3)',

  maxSequence: 'SELECT COALESCE(MAX(sequence), 0) AS max FROM manifests',
  getManifest: 'SELECT * FROM manifests WHERE id = $1',
  getDesired: 'SELECT m.* FROM desired d JOIN manifests m ON m.id = d.manifest_id WHERE d.machine = $1',
  desiredIds: 'SELECT machine, manifest_id FROM desired WHERE machine = ANY($1::text[])',
  manifestsById: 'SELECT * FROM manifests WHERE id = ANY($1::text[])',
  listManifests: 'SELECT * FROM manifests ORDER BY sequence DESC LIMIT $1',
  rolloutManifests: 'SELECT * FROM manifests WHERE rollout_id = $1 ORDER BY sequence',
  liveManifests: `SELECT * FROM manifests WHERE expires_at > $1
    AND id NOT IN (SELECT manifest_id FROM rollouts WHERE state != 'done')
    ORDER BY sequence DESC LIMIT ${INHERIT_LOOKBACK}`,
  setRolloutMachines: 'UPDATE manifests SET machines = $1 WHERE id = $2',

  revoke:
    'INSERT INTO revocations (serial, reason, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (serial) DO NOTHING',
  revokedSerials: 'SELECT serial FROM revocations',
  rememberNonce: 'INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING',
  pruneNonces: 'DELETE FROM nonces WHERE expires_at <= $1',
} as const

/**
 * Opens the store at `url` (postgres:// or postgresql://) and brings its schema up
 * to date. A bad URL, an unreachable server or a foreign database is a
 * PgStoreError naming the URL without its password.
 */
export async function openPostgresStore(url: string, options: PgOptions = {}): Promise<FleetStore> {
  const db = new PgDb(createPool(url, options))
  try {
    await migratePostgres(db, url)
  } catch (err) {
    await db.close()
    throw connectError(url, err)
  }
  // a coordinator (it has an origin) shares the database with others; `store` commands do not
  const origin = options.origin
  return new PgStore(
    db,
    origin === undefined ? undefined : new PgClusterChannel(db, url, { ...options, origin }),
  )
}

const first = async (rows: Promise<Row[]>): Promise<Row | undefined> => (await rows)[0]

function tokenUsed(nonce: string): StoreConflictError {
  return new StoreConflictError(
    'token-used',
    `enrollment token ${nonce} was already used; ask an admin for a new token`,
  )
}

class PgStore implements FleetStore {
  readonly #db: PgDb
  readonly #sql: Sql
  readonly #audit: PgAudit
  readonly #nix: PgNarInfos
  readonly #statuses: PgStatuses
  readonly revocationLog: PgRevocations
  readonly rollouts: PgRollouts
  readonly machineTags: PgMachineTags
  readonly cluster: PgClusterChannel | undefined

  constructor(db: PgDb, cluster: PgClusterChannel | undefined) {
    this.#db = db
    this.cluster = cluster
    this.#sql = db.sql
    this.#audit = new PgAudit(db)
    this.#nix = new PgNarInfos(db)
    this.#statuses = new PgStatuses(db)
    this.revocationLog = new PgRevocations(db)
    this.rollouts = new PgRollouts(db)
    this.machineTags = new PgMachineTags(db)
  }

  async getFleet(): Promise<FleetInfo | undefined> {
    const row = await first(this.#sql.rows(SQL.getFleet))
    return row === undefined
      ? undefined
      : { fleetId: text(row, 'fleet_id'), fleetRoot: text(row, 'fleet_root') }
  }

  async initFleet(fleetId: string, fleetRoot: string): Promise<void> {
    // Insert-if-absent, then compare: two coordinators starting a new fleet at once agree on one row.
    await this.#sql.run(SQL.insertFleet, [fleetId, fleetRoot])
    const stored = await this.getFleet()
    if (stored !== undefined && (stored.fleetId !== fleetId || stored.fleetRoot !== fleetRoot)) {
      throw new StoreConflictError(
        'fleet-mismatch',
        `this store belongs to fleet "${stored.fleetId}" (root ${stored.fleetRoot}), ` +
          `not "${fleetId}" (root ${fleetRoot}); use a separate database per fleet`,
      )
    }
  }

  async enrollMachine(input: EnrollMachineInput): Promise<MachineRecord> {
    try {
      // The 'fleet' lock orders enrollments with submits: the new machine inherits every manifest
      // committed before it, and a submit after it sees it enrolled.
      return await this.#db.transaction(['fleet'], (tx) => this.#enroll(tx, input))
    } catch (err) {
      // The primary key of used_tokens is the last word should the lock ever be bypassed.
      if (sqlState(err) === '23505' && /used_tokens/.test((err as { constraint?: string }).constraint ?? ''))
        throw tokenUsed(input.nonce)
      throw err
    }
  }

  async #enroll(tx: Sql, input: EnrollMachineInput): Promise<MachineRecord> {
    if ((await first(tx.rows(SQL.tokenUsed, [input.nonce]))) !== undefined) throw tokenUsed(input.nonce)
    const byName = await first(tx.rows(SQL.machineByName, [input.name]))
    if (byName !== undefined && text(byName, 'peer_id') !== input.peerId) {
      throw new StoreConflictError(
        'name-taken',
        `machine name "${input.name}" already belongs to peer ${text(byName, 'peer_id')}; ` +
          'choose another name, or remove the old machine first',
      )
    }
    const byPeer = await first(tx.rows(SQL.machineByPeer, [input.peerId]))
    if (byPeer !== undefined && text(byPeer, 'name') !== input.name) {
      throw new StoreConflictError(
        'peer-taken',
        `peer ${input.peerId} is already enrolled as "${text(byPeer, 'name')}"; ` +
          `it cannot enroll again as "${input.name}"`,
      )
    }
    const tags = JSON.stringify(input.tags)
    const facts = JSON.stringify(input.facts)
    if (byName === undefined) {
      await tx.run(SQL.insertMachine, [input.name, input.peerId, input.publicKey, tags, facts, input.at])
    } else {
      await tx.run(SQL.reenrollMachine, [tags, facts, input.at, input.name])
      await dropTagsInTransaction(tx, input.name)
    }
    await tx.run(SQL.useToken, [input.nonce, input.name, input.at])
    if ((await first(tx.rows(SQL.getDesired, [input.name]))) === undefined)
      await this.#inheritDesired(tx, input.name, input.tags, input.at)
    return toMachine(required(await first(tx.rows(SQL.machineByName, [input.name])), 'machines'))
  }

  /** As sqlite-store.ts: the newest unexpired manifest that targets the machine becomes its desired state. */
  async #inheritDesired(tx: Sql, name: string, tags: readonly string[], at: number): Promise<void> {
    const manifest = (await tx.rows(SQL.liveManifests, [at]))
      .map(toManifest)
      .find((m) => targetsMachine(m.targets, name, tags))
    if (manifest === undefined) return
    await setDesired(tx, [name], manifest.id)
    const machines = [...new Set([...manifest.machines, name])].sort()
    await tx.run(SQL.setRolloutMachines, [JSON.stringify(machines), manifest.id])
  }

  async getMachine(name: string): Promise<MachineRecord | undefined> {
    const row = await first(this.#sql.rows(SQL.machineByName, [name]))
    return row === undefined ? undefined : toMachine(row)
  }

  async getMachineByPeer(peerId: string): Promise<MachineRecord | undefined> {
    const row = await first(this.#sql.rows(SQL.machineByPeer, [peerId]))
    return row === undefined ? undefined : toMachine(row)
  }

  async listMachines(): Promise<MachineRecord[]> {
    return (await this.#sql.rows(SQL.listMachines)).map(toMachine)
  }

  async touchMachine(name: string, input: TouchInput): Promise<void> {
    const changed = await this.#sql.run(SQL.touchMachine, [
      input.lastSeen,
      input.path,
      input.transport ?? null,
      input.agentVersion ?? null,
      name,
    ])
    if (changed === 0) throw unknownMachine(name)
  }

  async maxSequence(): Promise<number> {
    return integer(required(await first(this.#sql.rows(SQL.maxSequence)), 'manifests'), 'max')
  }

  addManifest(record: NewManifest, machines: readonly string[]): Promise<ManifestRecord> {
    return this.#db.transaction(['fleet'], (tx) => addManifestInTransaction(tx, record, machines))
  }

  applyBundle(tags: readonly TagChange[], steps: readonly BundleStep[]): Promise<BundleOutcome[]> {
    return this.#db.transaction(['fleet'], async (tx) => {
      await applyTagsInTransaction(tx, tags)
      const out: BundleOutcome[] = []
      for (const step of steps)
        out.push(
          'rollout' in step
            ? await createRolloutInTransaction(tx, step.rollout)
            : await addManifestInTransaction(tx, step.manifest, step.machines),
        )
      return out
    })
  }

  async getManifest(id: string): Promise<ManifestRecord | undefined> {
    const row = await first(this.#sql.rows(SQL.getManifest, [id]))
    return row === undefined ? undefined : toManifest(row)
  }

  async getDesired(machine: string): Promise<ManifestRecord | undefined> {
    const row = await first(this.#sql.rows(SQL.getDesired, [machine]))
    return row === undefined ? undefined : toManifest(row)
  }

  async getDesiredMany(machines: readonly string[]): Promise<Map<string, ManifestRecord>> {
    // One read of both tables (a repeatable-read snapshot), each manifest decoded once.
    return this.#db.transaction([], async (tx) => {
      await tx.run('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ')
      const ids = await tx.rows(SQL.desiredIds, [machines])
      const wanted = [...new Set(ids.map((row) => text(row, 'manifest_id')))]
      const manifests = new Map(
        (await tx.rows(SQL.manifestsById, [wanted])).map((row) => [text(row, 'id'), toManifest(row)]),
      )
      const desired = new Map<string, ManifestRecord>()
      for (const row of ids) {
        const record = manifests.get(text(row, 'manifest_id'))
        if (record !== undefined) desired.set(text(row, 'machine'), record)
      }
      return desired
    })
  }

  async listManifests(limit: number): Promise<ManifestRecord[]> {
    return (await this.#sql.rows(SQL.listManifests, [checkLimit(limit)])).map(toManifest)
  }

  async rolloutManifests(rolloutId: string): Promise<ManifestRecord[]> {
    return (await this.#sql.rows(SQL.rolloutManifests, [rolloutId])).map(toManifest)
  }

  async recordStatus(record: StatusRecord): Promise<'stored' | 'duplicate'> {
    const [outcome] = await this.recordStatuses([record])
    if (outcome instanceof Error) throw outcome
    return outcome as 'stored' | 'duplicate'
  }

  recordStatuses(records: readonly StatusRecord[]): Promise<('stored' | 'duplicate' | StoreConflictError)[]> {
    return this.#statuses.record(records)
  }

  lastStatusSeq(machine: string): Promise<number> {
    return this.#statuses.lastSeq(machine)
  }

  latestStatus(machine: string): Promise<StatusRecord | undefined> {
    return this.#statuses.latest(machine)
  }

  latestStatuses(): Promise<Map<string, StatusRecord>> {
    return this.#statuses.latestAll()
  }

  statusHistory(machine: string, limit: number): Promise<StatusRecord[]> {
    return this.#statuses.history(machine, limit)
  }

  latestRolloutReport(machine: string, rolloutId: string): Promise<StatusRecord | undefined> {
    return this.#statuses.latestRolloutReport(machine, rolloutId)
  }

  latestLogReport(machine: string): Promise<StatusRecord | undefined> {
    return this.#statuses.latestLogReport(machine)
  }

  appendAudit(entry: AuditEntry, sign: AuditSigner): Promise<AuditRecord> {
    return this.#audit.append(entry, sign)
  }

  listAudit(afterIndex: number, limit: number, maxBytes?: number): Promise<AuditRecord[]> {
    return this.#audit.list(afterIndex, limit, maxBytes)
  }

  recordRead(entry: AuditReadEntry): Promise<void> {
    return this.#audit.recordRead(entry)
  }

  listReads(limit: number): Promise<AuditRead[]> {
    return this.#audit.listReads(limit)
  }

  async revoke(serial: string, reason: string, at: number): Promise<void> {
    await this.#sql.run(SQL.revoke, [serial, reason, at])
  }

  async revokedSerials(): Promise<Set<string>> {
    return new Set((await this.#sql.rows(SQL.revokedSerials)).map((row) => text(row, 'serial')))
  }

  async rememberNonce(nonce: string, expiresAt: number): Promise<boolean> {
    // The primary key decides: of two coordinators seeing one nonce at once, one inserts it.
    return (await this.#sql.run(SQL.rememberNonce, [nonce, expiresAt])) === 1
  }

  async pruneNonces(now: number): Promise<void> {
    await this.#sql.run(SQL.pruneNonces, [now])
  }

  putNarInfos(narinfos: readonly NewNarInfo[], at: number): Promise<('stored' | 'already-had')[]> {
    return this.#nix.put(narinfos, at)
  }

  getNarInfos(hashes: readonly string[]): Promise<NarInfoRecord[]> {
    return this.#nix.get(hashes)
  }

  touchNarInfos(hashes: readonly string[], at: number): Promise<void> {
    return this.#nix.touch(hashes, at)
  }

  narInfoClosure(storePath: string, maxPaths: number): Promise<NarInfoClosure> {
    return this.#nix.closure(storePath, maxPaths)
  }

  collectNarInfos(roots: readonly string[], before: number): Promise<NarInfoCollection> {
    return this.#nix.collect(roots, before)
  }

  async close(): Promise<void> {
    await this.cluster?.close()
    await this.#db.close()
  }
}
