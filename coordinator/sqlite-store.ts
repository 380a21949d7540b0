/**
 * The embedded FleetStore: one SQLite file through node:sqlite.
 *
 * Durability: WAL with synchronous=FULL, so a commit has reached the disk (the
 * WAL is fsync'd) before the method's promise resolves, and an acknowledged
 * status report survives a power cut. node:sqlite is synchronous, so every
 * method runs start to finish without yielding to the event loop: calls from one
 * process never interleave, and BEGIN IMMEDIATE serialises against any other
 * process that opens the same file. Sightings (touchMachine) are the exception:
 * those of one event-loop turn commit together (sqlite-sightings.ts).
 *
 * @example
 *
 * ```ts
 * const store = await openSqliteStore(join(stateDir, 'fleet.db'), { create: false }) // tests: ':memory:'
 * ```
 *
 * The schema and its migrations are in sqlite-schema.ts, the decoding of rows
 * into records in sqlite-rows.ts, the Nix cache's narinfos in sqlite-narinfos.ts, the
 * audit log and its read summaries in sqlite-audit.ts, the signed revocation list in
 * sqlite-revocations.ts, rollouts in waves in sqlite-rollouts.ts, the desired states of many
 * machines at once (a fan-out's one read) in sqlite-desired.ts.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { type AuditRead, targetsMachine } from '../protocol/index.ts'
import { SqliteAudit } from './sqlite-audit.ts'
import { SqliteDesired } from './sqlite-desired.ts'
import { SqliteNarInfos } from './sqlite-narinfos.ts'
import { SqliteRevocations } from './sqlite-revocations.ts'
import { SqliteRollouts, unknownMachine } from './sqlite-rollouts.ts'
import {
  checkLimit,
  integer,
  mapRow,
  prepareStatements,
  required,
  text,
  toMachine,
  toManifest,
  toStatus,
} from './sqlite-rows.ts'
import { type OpenOptions, openDatabase, storeFileError } from './sqlite-schema.ts'
import { SqliteSightings } from './sqlite-sightings.ts'
import { SqliteMachineTags, type TagChange } from './sqlite-tags.ts'
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

export { SCHEMA_VERSION, StoreFileError, type StoreFileErrorCode } from './sqlite-schema.ts'

/** How many of a machine's newest reports machine-log (and a rollout's watch) look through. */
const LOG_REPORT_LOOKBACK = 1000

/**
 * How many of the newest unexpired manifests a machine enrolling without a
 * desired state looks through for one that targets it (see enrollMachine).
 */
const INHERIT_LOOKBACK = 1000

/** Opens the store at `path` (see openDatabase for `create`); a file it cannot use is a StoreFileError. */
export async function openSqliteStore(path: string, options: OpenOptions = {}): Promise<FleetStore> {
  const db = await openDatabase(path, options)
  try {
    return new SqliteStore(db) // preparing every statement shows a missing table or a damaged page
  } catch (err) {
    db.close()
    throw storeFileError(path, err)
  }
}

/** Every statement the store runs, prepared once when it opens. */
const statementSql = {
  begin: 'BEGIN IMMEDIATE',
  commit: 'COMMIT',
  rollback: 'ROLLBACK',

  getFleet: 'SELECT fleet_id, fleet_root FROM fleet WHERE singleton = 1',
  insertFleet: 'INSERT INTO fleet (singleton, fleet_id, fleet_root) VALUES (1, ?, ?)',

  machineByName: 'SELECT * FROM machines WHERE name = ?',
  machineByPeer: 'SELECT * FROM machines WHERE peer_id = ?',
  listMachines: 'SELECT * FROM machines ORDER BY name',
  machineExists: 'SELECT 1 AS found FROM machines WHERE name = ?',
  insertMachine: `INSERT INTO machines (name, peer_id, public_key, tags, facts, enrolled_at)
    VALUES (?, ?, ?, ?, ?, ?)`,
  reenrollMachine: 'UPDATE machines SET tags = ?, facts = ?, enrolled_at = ? WHERE name = ?',
  tokenUsed: 'SELECT 1 AS found FROM used_tokens WHERE nonce = ?',
  useToken: 'INSERT INTO used_tokens (nonce, machine, used_at) VALUES (?, ?, ?)',

  maxSequence: 'SELECT COALESCE(MAX(sequence), 0) AS max FROM manifests',
  setDesired: `INSERT INTO desired (machine, manifest_id) VALUES (?, ?)
    ON CONFLICT (machine) DO UPDATE SET manifest_id = excluded.manifest_id`,
  getManifest: 'SELECT * FROM manifests WHERE id = ?',
  getDesired: 'SELECT m.* FROM desired d JOIN manifests m ON m.id = d.manifest_id WHERE d.machine = ?',
  listManifests: 'SELECT * FROM manifests ORDER BY sequence DESC LIMIT ?',
  rolloutManifests: 'SELECT * FROM manifests WHERE rollout_id = ? ORDER BY sequence',
  // Not the release of a rollout in waves still under way or halted: a late member must not skip its waves.
  liveManifests: `SELECT * FROM manifests WHERE expires_at > ?
    AND id NOT IN (SELECT manifest_id FROM rollouts WHERE state != 'done')
    ORDER BY sequence DESC LIMIT ${INHERIT_LOOKBACK}`,
  setRolloutMachines: 'UPDATE manifests SET machines = ? WHERE id = ?',

  insertStatus: `INSERT INTO statuses (machine, seq, report, envelope, received_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (machine, seq) DO NOTHING`,
  advanceLatest: `INSERT INTO latest_status (machine, seq) VALUES (?, ?)
    ON CONFLICT (machine) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > latest_status.seq`,
  sameStatus: 'SELECT envelope = ? AS same FROM statuses WHERE machine = ? AND seq = ?',
  lastStatusSeq: 'SELECT seq FROM latest_status WHERE machine = ?',
  latestStatus: `SELECT s.* FROM latest_status l JOIN statuses s ON s.machine = l.machine AND s.seq = l.seq
    WHERE l.machine = ?`,
  latestStatuses:
    'SELECT s.* FROM latest_status l JOIN statuses s ON s.machine = l.machine AND s.seq = l.seq',
  statusHistory: 'SELECT * FROM statuses WHERE machine = ? ORDER BY seq DESC LIMIT ?',
  // The newest report of one update (manifest) that carries a log: later reports of
  // the same update may not repeat it, and an older update's log must not stand in.
  latestLogReport: `SELECT * FROM (SELECT * FROM statuses WHERE machine = ? ORDER BY seq DESC LIMIT ${LOG_REPORT_LOOKBACK})
    WHERE json_extract(report, '$.manifestId') IS ?
      AND (json_type(report, '$.log') IS NOT NULL OR json_type(report, '$.rebootRequired') IS NOT NULL)
    ORDER BY seq DESC LIMIT 1`,
  latestRolloutReport: `SELECT * FROM (SELECT * FROM statuses WHERE machine = ? ORDER BY seq DESC LIMIT ${LOG_REPORT_LOOKBACK})
    WHERE json_extract(report, '$.rolloutId') = ? ORDER BY seq DESC LIMIT 1`,

  revoke:
    'INSERT INTO revocations (serial, reason, revoked_at) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING',
  revokedSerials: 'SELECT serial FROM revocations',

  rememberNonce: 'INSERT INTO nonces (nonce, expires_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING',
  pruneNonces: 'DELETE FROM nonces WHERE expires_at <= ?',
} as const

type Statements = { [K in keyof typeof statementSql]: StatementSync }

class SqliteStore implements FleetStore {
  readonly #db: DatabaseSync
  readonly #s: Statements
  readonly #nix: SqliteNarInfos
  readonly #audit: SqliteAudit
  readonly #desired: SqliteDesired
  readonly revocationLog: SqliteRevocations
  readonly rollouts: SqliteRollouts
  readonly machineTags: SqliteMachineTags
  readonly #sightings: SqliteSightings

  constructor(db: DatabaseSync) {
    this.#db = db
    this.#s = prepareStatements(db, statementSql)
    this.#nix = new SqliteNarInfos(db, (fn) => this.#write(fn))
    this.#audit = new SqliteAudit(db, (fn) => this.#write(fn))
    this.#desired = new SqliteDesired(db)
    this.revocationLog = new SqliteRevocations(db, (fn) => this.#write(fn))
    this.rollouts = new SqliteRollouts(db, (fn) => this.#write(fn))
    this.machineTags = new SqliteMachineTags(db, (fn) => this.#write(fn))
    this.#sightings = new SqliteSightings(db, (fn) => this.#write(fn))
  }

  /** Runs fn inside BEGIN IMMEDIATE … COMMIT; any throw rolls everything back. */
  #write<T>(fn: () => T): T {
    this.#s.begin.run()
    try {
      const result = fn()
      this.#s.commit.run()
      return result
    } catch (err) {
      if (this.#db.isTransaction) this.#s.rollback.run()
      throw err
    }
  }

  async getFleet(): Promise<FleetInfo | undefined> {
    const row = this.#s.getFleet.get()
    return row === undefined
      ? undefined
      : { fleetId: text(row, 'fleet_id'), fleetRoot: text(row, 'fleet_root') }
  }

  async initFleet(fleetId: string, fleetRoot: string): Promise<void> {
    this.#write(() => {
      const row = this.#s.getFleet.get()
      if (row === undefined) {
        this.#s.insertFleet.run(fleetId, fleetRoot)
        return
      }
      const stored = { fleetId: text(row, 'fleet_id'), fleetRoot: text(row, 'fleet_root') }
      if (stored.fleetId !== fleetId || stored.fleetRoot !== fleetRoot) {
        throw new StoreConflictError(
          'fleet-mismatch',
          `this store belongs to fleet "${stored.fleetId}" (root ${stored.fleetRoot}), ` +
            `not "${fleetId}" (root ${fleetRoot}); use a separate state directory per fleet`,
        )
      }
    })
  }

  async enrollMachine(input: EnrollMachineInput): Promise<MachineRecord> {
    return this.#write(() => {
      if (this.#s.tokenUsed.get(input.nonce) !== undefined) {
        throw new StoreConflictError(
          'token-used',
          `enrollment token ${input.nonce} was already used; ask an admin for a new token`,
        )
      }
      const byName = this.#s.machineByName.get(input.name)
      if (byName !== undefined && text(byName, 'peer_id') !== input.peerId) {
        throw new StoreConflictError(
          'name-taken',
          `machine name "${input.name}" already belongs to peer ${text(byName, 'peer_id')}; ` +
            'choose another name, or remove the old machine first',
        )
      }
      const byPeer = this.#s.machineByPeer.get(input.peerId)
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
        this.#s.insertMachine.run(input.name, input.peerId, input.publicKey, tags, facts, input.at)
      } else {
        this.#s.reenrollMachine.run(tags, facts, input.at, input.name)
        this.machineTags.dropInTransaction(input.name) // the token's tags are the newer statement
      }
      this.#s.useToken.run(input.nonce, input.name, input.at)
      if (this.#s.getDesired.get(input.name) === undefined)
        this.#inheritDesired(input.name, input.tags, input.at)
      return toMachine(required(this.#s.machineByName.get(input.name), 'machines'))
    })
  }

  /**
   * A rollout to a tag (or to a name, signed ahead with --allow-future-machines)
   * also reaches a machine that enrolls later with it: the newest unexpired
   * manifest that targets the machine becomes its desired state, and the machine
   * joins that rollout. The agent checks the signed targets itself, so this grants
   * nothing the admin did not sign. Runs inside enrollMachine's transaction.
   */
  #inheritDesired(name: string, tags: readonly string[], at: number): void {
    const manifest = this.#s.liveManifests
      .all(at)
      .map(toManifest)
      .find((m) => targetsMachine(m.targets, name, tags))
    if (manifest === undefined) return
    this.#s.setDesired.run(name, manifest.id)
    const machines = [...new Set([...manifest.machines, name])].sort()
    this.#s.setRolloutMachines.run(JSON.stringify(machines), manifest.id)
  }

  async getMachine(name: string): Promise<MachineRecord | undefined> {
    return mapRow(this.#s.machineByName.get(name), toMachine)
  }

  async getMachineByPeer(peerId: string): Promise<MachineRecord | undefined> {
    return mapRow(this.#s.machineByPeer.get(peerId), toMachine)
  }

  async listMachines(): Promise<MachineRecord[]> {
    return this.#s.listMachines.all().map(toMachine)
  }

  touchMachine(name: string, input: TouchInput): Promise<void> {
    return this.#sightings.touch(name, input)
  }

  async maxSequence(): Promise<number> {
    return integer(required(this.#s.maxSequence.get(), 'manifests'), 'max')
  }

  async addManifest(record: NewManifest, machines: readonly string[]): Promise<ManifestRecord> {
    return this.#write(() => this.rollouts.addManifestInTransaction(record, machines))
  }

  async applyBundle(tags: readonly TagChange[], steps: readonly BundleStep[]): Promise<BundleOutcome[]> {
    return this.#write(() => {
      this.machineTags.applyInTransaction(tags)
      return steps.map((step) =>
        'rollout' in step
          ? this.rollouts.createInTransaction(step.rollout)
          : this.rollouts.addManifestInTransaction(step.manifest, step.machines),
      )
    })
  }

  async getManifest(id: string): Promise<ManifestRecord | undefined> {
    return mapRow(this.#s.getManifest.get(id), toManifest)
  }

  async getDesired(machine: string): Promise<ManifestRecord | undefined> {
    return mapRow(this.#s.getDesired.get(machine), toManifest)
  }

  async getDesiredMany(machines: readonly string[]): Promise<Map<string, ManifestRecord>> {
    return this.#desired.many(machines)
  }

  async listManifests(limit: number): Promise<ManifestRecord[]> {
    return this.#s.listManifests.all(checkLimit(limit)).map(toManifest)
  }

  async rolloutManifests(rolloutId: string): Promise<ManifestRecord[]> {
    return this.#s.rolloutManifests.all(rolloutId).map(toManifest)
  }

  async recordStatus(record: StatusRecord): Promise<'stored' | 'duplicate'> {
    const [outcome] = await this.recordStatuses([record])
    if (outcome instanceof Error) throw outcome
    return outcome as 'stored' | 'duplicate'
  }

  async recordStatuses(
    records: readonly StatusRecord[],
  ): Promise<('stored' | 'duplicate' | StoreConflictError)[]> {
    return this.#write(() =>
      records.map((record) => {
        if (this.#s.machineExists.get(record.machine) === undefined) return unknownMachine(record.machine)
        const inserted = this.#s.insertStatus.run(
          record.machine,
          record.seq,
          JSON.stringify(record.report),
          record.envelope,
          record.receivedAt,
        )
        if (Number(inserted.changes) === 0) {
          const same = this.#s.sameStatus.get(record.envelope, record.machine, record.seq)?.same
          return same === 1 ? 'duplicate' : seqReused(record)
        }
        this.#s.advanceLatest.run(record.machine, record.seq)
        return 'stored'
      }),
    )
  }

  async lastStatusSeq(machine: string): Promise<number> {
    const row = this.#s.lastStatusSeq.get(machine)
    return row === undefined ? 0 : integer(row, 'seq')
  }

  async latestStatus(machine: string): Promise<StatusRecord | undefined> {
    return mapRow(this.#s.latestStatus.get(machine), toStatus)
  }

  async latestStatuses(): Promise<Map<string, StatusRecord>> {
    const out = new Map<string, StatusRecord>()
    for (const row of this.#s.latestStatuses.all()) {
      const status = toStatus(row)
      out.set(status.machine, status)
    }
    return out
  }

  async statusHistory(machine: string, limit: number): Promise<StatusRecord[]> {
    return this.#s.statusHistory.all(machine, checkLimit(limit)).map(toStatus)
  }

  async latestRolloutReport(machine: string, rolloutId: string): Promise<StatusRecord | undefined> {
    return mapRow(this.#s.latestRolloutReport.get(machine, rolloutId), toStatus)
  }

  async latestLogReport(machine: string): Promise<StatusRecord | undefined> {
    const latest = await this.latestStatus(machine)
    if (latest === undefined) return undefined
    return mapRow(this.#s.latestLogReport.get(machine, latest.report.manifestId), toStatus) ?? latest
  }

  async appendAudit(entry: AuditEntry, sign: AuditSigner): Promise<AuditRecord> {
    return this.#audit.append(entry, sign)
  }

  async listAudit(afterIndex: number, limit: number, maxBytes?: number): Promise<AuditRecord[]> {
    return this.#audit.list(afterIndex, limit, maxBytes)
  }

  async recordRead(entry: AuditReadEntry): Promise<void> {
    this.#audit.recordRead(entry)
  }

  async listReads(limit: number): Promise<AuditRead[]> {
    return this.#audit.listReads(limit)
  }

  async revoke(serial: string, reason: string, at: number): Promise<void> {
    this.#s.revoke.run(serial, reason, at)
  }

  async revokedSerials(): Promise<Set<string>> {
    return new Set(this.#s.revokedSerials.all().map((row) => text(row, 'serial')))
  }

  async rememberNonce(nonce: string, expiresAt: number): Promise<boolean> {
    return Number(this.#s.rememberNonce.run(nonce, expiresAt).changes) === 1
  }

  async pruneNonces(now: number): Promise<void> {
    this.#s.pruneNonces.run(now)
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
    if (this.#db.isOpen) this.#db.close()
  }
}

function seqReused({ machine, seq }: StatusRecord): StoreConflictError {
  return new StoreConflictError('seq-reused', `${machine} reused report seq ${seq} for a different report`)
}
