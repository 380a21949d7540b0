/**
 * The embedded FleetStore: one SQLite file through node:sqlite.
 *
 * Durability: WAL with synchronous=FULL, so a commit has reached the disk (the
 * WAL is fsync'd) before the method's promise resolves, and an acknowledged
 * status report survives a power cut. node:sqlite is synchronous, so every
 * method runs start to finish without yielding to the event loop: calls from one
 * process never interleave, and BEGIN IMMEDIATE serialises against any other
 * process that opens the same file.
 *
 * @example
 *
 * ```ts
 * const store = await openSqliteStore(join(stateDir, 'coordinator.db'))
 * // tests: await openSqliteStore(':memory:')
 * ```
 */
import { chmod, mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { DatabaseSync, type SQLOutputValue, type StatementSync } from 'node:sqlite'
import type { StatusReport, Targets } from '../protocol/index.ts'
import { AUDIT_HASH_BYTES, auditHash, GENESIS_PREV_HASH } from './audit.ts'
import {
  type AuditEntry,
  type AuditRecord,
  type AuditSigner,
  type EnrollMachineInput,
  type FleetInfo,
  type FleetStore,
  MAX_AUDIT_REQUEST_BYTES,
  type MachineRecord,
  type ManifestRecord,
  type NewManifest,
  type StatusRecord,
  StoreConflictError,
  StoreLimitError,
  StoreSchemaError,
  type TouchInput,
} from './store.ts'

/** A file lock held by another process (another coordinator, a backup) is waited for this long. */
const BUSY_TIMEOUT_MS = 5000
const SIGNATURE_BYTES = 64

/**
 * migrations[n] takes the schema from user_version n to n + 1. Append only:
 * a shipped migration never changes, since databases in the field already ran it.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE fleet (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    fleet_id TEXT NOT NULL,
    fleet_root TEXT NOT NULL
  ) STRICT;

  CREATE TABLE machines (
    name TEXT PRIMARY KEY,
    peer_id TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    tags TEXT NOT NULL,
    facts TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    path TEXT CHECK (path IN ('direct', 'relayed'))
  ) STRICT;

  -- Kept forever, not pruned: an enrollment token must never work twice.
  CREATE TABLE used_tokens (
    nonce TEXT PRIMARY KEY,
    machine TEXT NOT NULL REFERENCES machines (name),
    used_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE manifests (
    id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL UNIQUE,
    rollout_id TEXT NOT NULL,
    generation TEXT NOT NULL,
    targets TEXT NOT NULL,
    envelope BLOB NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    machines TEXT NOT NULL
  ) STRICT;
  CREATE INDEX manifests_rollout ON manifests (rollout_id);

  CREATE TABLE desired (
    machine TEXT PRIMARY KEY REFERENCES machines (name),
    manifest_id TEXT NOT NULL REFERENCES manifests (id)
  ) STRICT;
  CREATE INDEX desired_manifest ON desired (manifest_id);

  CREATE TABLE statuses (
    machine TEXT NOT NULL REFERENCES machines (name),
    seq INTEGER NOT NULL,
    report TEXT NOT NULL,
    envelope BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (machine, seq)
  ) STRICT;

  CREATE TABLE latest_status (
    machine TEXT PRIMARY KEY REFERENCES machines (name),
    seq INTEGER NOT NULL,
    FOREIGN KEY (machine, seq) REFERENCES statuses (machine, seq)
  ) STRICT;

  CREATE TABLE audit (
    idx INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    peer_id TEXT NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail TEXT NOT NULL,
    request BLOB,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    sig BLOB NOT NULL
  ) STRICT;
  -- The hash chain detects tampering; these stop this program's own bugs from doing it.
  CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
  CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

  CREATE TABLE revocations (
    serial TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    revoked_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE nonces (
    nonce TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX nonces_expiry ON nonces (expires_at);
  `,
]

export const SCHEMA_VERSION = MIGRATIONS.length

/** Opens (creating if needed) the store at `path`; ":memory:" gives a private in-memory store. */
export async function openSqliteStore(path: string): Promise<FleetStore> {
  if (path !== ':memory:') await prepareFile(path)
  const db = new DatabaseSync(path, { enableForeignKeyConstraints: true })
  try {
    configure(db)
    migrate(db, path)
    return new SqliteStore(db)
  } catch (err) {
    db.close()
    throw err
  }
}

/**
 * The store holds the audit log and enrollment records, so only its owner may
 * read it. SQLite gives the -wal and -shm files the main file's mode, so making
 * the main file 0600 before SQLite first opens it covers them too.
 */
async function prepareFile(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const handle = await open(path, 'a', 0o600)
  await handle.close()
  await chmod(path, 0o600)
  for (const suffix of ['-wal', '-shm']) {
    await chmod(`${path}${suffix}`, 0o600).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
  }
}

function configure(db: DatabaseSync): void {
  db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`)
  db.exec('PRAGMA journal_mode = WAL')
  db.exec('PRAGMA synchronous = FULL')
  db.exec('PRAGMA foreign_keys = ON')
}

function migrate(db: DatabaseSync, path: string): void {
  const version = integer(db.prepare('PRAGMA user_version').get() ?? {}, 'user_version')
  if (version > MIGRATIONS.length) {
    throw new StoreSchemaError(
      `${path} has schema version ${version}, but this fleetmesh knows versions up to ${MIGRATIONS.length}; ` +
        'it was written by a newer fleetmesh. Upgrade fleetmesh, or restore a backup made by this version',
    )
  }
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.exec('BEGIN IMMEDIATE')
    try {
      db.exec(MIGRATIONS[v] as string)
      db.exec(`PRAGMA user_version = ${v + 1}`)
      db.exec('COMMIT')
    } catch (err) {
      if (db.isTransaction) db.exec('ROLLBACK')
      throw err
    }
  }
}

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
  touchMachine: 'UPDATE machines SET last_seen = ?, path = ? WHERE name = ?',
  tokenUsed: 'SELECT 1 AS found FROM used_tokens WHERE nonce = ?',
  useToken: 'INSERT INTO used_tokens (nonce, machine, used_at) VALUES (?, ?, ?)',

  maxSequence: 'SELECT COALESCE(MAX(sequence), 0) AS max FROM manifests',
  insertManifest: `INSERT INTO manifests (id, sequence, rollout_id, generation, targets, envelope,
    submitted_by, submitted_at, expires_at, machines) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  setDesired: `INSERT INTO desired (machine, manifest_id) VALUES (?, ?)
    ON CONFLICT (machine) DO UPDATE SET manifest_id = excluded.manifest_id`,
  getManifest: 'SELECT * FROM manifests WHERE id = ?',
  getDesired: 'SELECT m.* FROM desired d JOIN manifests m ON m.id = d.manifest_id WHERE d.machine = ?',
  listManifests: 'SELECT * FROM manifests ORDER BY sequence DESC LIMIT ?',

  insertStatus: `INSERT INTO statuses (machine, seq, report, envelope, received_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (machine, seq) DO NOTHING`,
  advanceLatest: `INSERT INTO latest_status (machine, seq) VALUES (?, ?)
    ON CONFLICT (machine) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > latest_status.seq`,
  lastStatusSeq: 'SELECT seq FROM latest_status WHERE machine = ?',
  latestStatus: `SELECT s.* FROM latest_status l JOIN statuses s ON s.machine = l.machine AND s.seq = l.seq
    WHERE l.machine = ?`,
  latestStatuses:
    'SELECT s.* FROM latest_status l JOIN statuses s ON s.machine = l.machine AND s.seq = l.seq',
  statusHistory: 'SELECT * FROM statuses WHERE machine = ? ORDER BY seq DESC LIMIT ?',

  lastAudit: 'SELECT idx, hash FROM audit ORDER BY idx DESC LIMIT 1',
  insertAudit: `INSERT INTO audit (idx, at, peer_id, actor, action, outcome, detail, request, prev_hash, hash, sig)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  listAudit: 'SELECT * FROM audit WHERE idx > ? ORDER BY idx LIMIT ?',

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

  constructor(db: DatabaseSync) {
    this.#db = db
    const entries = Object.entries(statementSql).map(([key, sql]) => [key, db.prepare(sql)])
    this.#s = Object.fromEntries(entries) as Statements
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
      }
      this.#s.useToken.run(input.nonce, input.name, input.at)
      return toMachine(required(this.#s.machineByName.get(input.name), 'machines'))
    })
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

  async touchMachine(name: string, input: TouchInput): Promise<void> {
    const result = this.#s.touchMachine.run(input.lastSeen, input.path, name)
    if (Number(result.changes) === 0) throw unknownMachine(name)
  }

  async maxSequence(): Promise<number> {
    return integer(required(this.#s.maxSequence.get(), 'manifests'), 'max')
  }

  async addManifest(record: NewManifest, machines: readonly string[]): Promise<ManifestRecord> {
    const targets = [...new Set(machines)].sort()
    return this.#write(() => {
      const max = integer(required(this.#s.maxSequence.get(), 'manifests'), 'max')
      if (record.sequence <= max) {
        throw new StoreConflictError(
          'stale-sequence',
          `manifest sequence ${record.sequence} is not above the highest stored sequence ${max}; ` +
            `sign the manifest again with sequence ${max + 1} or higher`,
        )
      }
      for (const machine of targets) {
        if (this.#s.machineExists.get(machine) === undefined) throw unknownMachine(machine)
      }
      this.#s.insertManifest.run(
        record.id,
        record.sequence,
        record.rolloutId,
        record.generation,
        JSON.stringify(record.targets),
        record.envelope,
        record.submittedBy,
        record.submittedAt,
        record.expiresAt,
        JSON.stringify(targets),
      )
      for (const machine of targets) this.#s.setDesired.run(machine, record.id)
      return toManifest(required(this.#s.getManifest.get(record.id), 'manifests'))
    })
  }

  async getManifest(id: string): Promise<ManifestRecord | undefined> {
    return mapRow(this.#s.getManifest.get(id), toManifest)
  }

  async getDesired(machine: string): Promise<ManifestRecord | undefined> {
    return mapRow(this.#s.getDesired.get(machine), toManifest)
  }

  async listManifests(limit: number): Promise<ManifestRecord[]> {
    return this.#s.listManifests.all(checkLimit(limit)).map(toManifest)
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
        if (Number(inserted.changes) === 0) return 'duplicate'
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

  async appendAudit(entry: AuditEntry, sign: AuditSigner): Promise<AuditRecord> {
    if (entry.request !== null && entry.request.byteLength > MAX_AUDIT_REQUEST_BYTES) {
      throw new StoreLimitError(
        `audit request is ${entry.request.byteLength} bytes, more than the ${MAX_AUDIT_REQUEST_BYTES}-byte limit`,
      )
    }
    return this.#write(() => {
      const last = this.#s.lastAudit.get()
      const fields = {
        index: last === undefined ? 1 : integer(last, 'idx') + 1,
        at: entry.at,
        peerId: entry.peerId,
        actor: entry.actor,
        action: entry.action,
        outcome: entry.outcome,
        detail: entry.detail,
        request: entry.request === null ? null : Uint8Array.from(entry.request),
        prevHash: last === undefined ? GENESIS_PREV_HASH : blob(last, 'hash'),
      }
      const hash = auditHash(fields)
      const sig = sign(hash)
      if (!(sig instanceof Uint8Array) || sig.byteLength !== SIGNATURE_BYTES) {
        throw new TypeError(
          `the audit signer returned ${describe(sig)}, expected a ${SIGNATURE_BYTES}-byte signature`,
        )
      }
      const record: AuditRecord = { ...fields, prevHash: Uint8Array.from(fields.prevHash), hash, sig }
      this.#s.insertAudit.run(
        record.index,
        record.at,
        record.peerId,
        record.actor,
        record.action,
        record.outcome,
        record.detail,
        record.request,
        record.prevHash,
        record.hash,
        record.sig,
      )
      return record
    })
  }

  async listAudit(afterIndex: number, limit: number): Promise<AuditRecord[]> {
    return this.#s.listAudit.all(afterIndex, checkLimit(limit)).map(toAudit)
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

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close()
  }
}

// ---------------------------------------------------------------- rows

type Row = Record<string, SQLOutputValue>

function unknownMachine(name: string): StoreConflictError {
  return new StoreConflictError('unknown-machine', `no machine named "${name}" is enrolled`)
}

function checkLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(`limit must be a non-negative integer, got ${limit}`)
  }
  return limit
}

function mapRow<T>(row: Row | undefined, fn: (row: Row) => T): T | undefined {
  return row === undefined ? undefined : fn(row)
}

function required(row: Row | undefined, table: string): Row {
  if (row === undefined) throw new StoreSchemaError(`a row just written to ${table} cannot be read back`)
  return row
}

function corrupt(key: string, expected: string, value: unknown): StoreSchemaError {
  return new StoreSchemaError(
    `column ${key} holds ${describe(value)}, expected ${expected}; the database is damaged`,
  )
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`
  return typeof value
}

function text(row: Row, key: string): string {
  const value = row[key]
  if (typeof value !== 'string') throw corrupt(key, 'text', value)
  return value
}

function integer(row: Row, key: string): number {
  const value = row[key]
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw corrupt(key, 'an integer', value)
  return value
}

function blob(row: Row, key: string): Uint8Array {
  const value = row[key]
  if (!(value instanceof Uint8Array)) throw corrupt(key, 'a blob', value)
  return value
}

function nullable<T>(row: Row, key: string, read: (row: Row, key: string) => T): T | null {
  return row[key] === null ? null : read(row, key)
}

/**
 * JSON columns are written only by this store from values the protocol layer
 * already validated, so they are trusted on the way back instead of re-parsed
 * with a schema on every read.
 */
function json<T>(row: Row, key: string): T {
  try {
    return JSON.parse(text(row, key)) as T
  } catch (err) {
    if (err instanceof StoreSchemaError) throw err
    throw corrupt(key, 'JSON text', row[key])
  }
}

function toMachine(row: Row): MachineRecord {
  const path = row.path
  if (path !== null && path !== 'direct' && path !== 'relayed')
    throw corrupt('path', 'direct or relayed', path)
  return {
    name: text(row, 'name'),
    peerId: text(row, 'peer_id'),
    publicKey: text(row, 'public_key'),
    tags: json<string[]>(row, 'tags'),
    facts: json<Record<string, string>>(row, 'facts'),
    enrolledAt: integer(row, 'enrolled_at'),
    lastSeen: nullable(row, 'last_seen', integer),
    path,
  }
}

function toManifest(row: Row): ManifestRecord {
  return {
    id: text(row, 'id'),
    sequence: integer(row, 'sequence'),
    rolloutId: text(row, 'rollout_id'),
    generation: text(row, 'generation'),
    targets: json<Targets>(row, 'targets'),
    envelope: blob(row, 'envelope'),
    submittedBy: text(row, 'submitted_by'),
    submittedAt: integer(row, 'submitted_at'),
    expiresAt: integer(row, 'expires_at'),
    machines: json<string[]>(row, 'machines'),
  }
}

function toStatus(row: Row): StatusRecord {
  return {
    machine: text(row, 'machine'),
    seq: integer(row, 'seq'),
    report: json<StatusReport>(row, 'report'),
    envelope: blob(row, 'envelope'),
    receivedAt: integer(row, 'received_at'),
  }
}

function toAudit(row: Row): AuditRecord {
  const outcome = row.outcome
  if (outcome !== 'ok' && outcome !== 'denied' && outcome !== 'error') {
    throw corrupt('outcome', 'ok, denied or error', outcome)
  }
  const prevHash = blob(row, 'prev_hash')
  const hash = blob(row, 'hash')
  if (prevHash.byteLength !== AUDIT_HASH_BYTES || hash.byteLength !== AUDIT_HASH_BYTES) {
    throw corrupt('hash', `${AUDIT_HASH_BYTES} bytes`, hash.byteLength !== AUDIT_HASH_BYTES ? hash : prevHash)
  }
  return {
    index: integer(row, 'idx'),
    at: integer(row, 'at'),
    peerId: text(row, 'peer_id'),
    actor: nullable(row, 'actor', text),
    action: text(row, 'action'),
    outcome,
    detail: text(row, 'detail'),
    request: nullable(row, 'request', blob),
    prevHash,
    hash,
    sig: blob(row, 'sig'),
  }
}
