/**
 * The embedded store's file and schema: the SQLite file's permissions, the
 * connection settings that make a commit durable, and the append-only list of
 * migrations that brings any older database up to {@link SCHEMA_VERSION}.
 * Used by sqlite-store.ts when it opens a database. A file that cannot be used
 * (missing where one must exist, empty, not SQLite, damaged, someone else's
 * tables) is a {@link StoreFileError} naming it, never a bare SQLite error.
 */
import { chmod, mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { CodedError, errorMessage, fileSize } from '../lib/index.ts'
import { integer } from './sqlite-rows.ts'
import { StoreSchemaError } from './store.ts'

export type StoreFileErrorCode =
  /** No file where an existing database was expected. */
  | 'missing'
  /** A 0-byte file (and no write-ahead log) where an existing database was expected. */
  | 'empty'
  /** Not a SQLite file at all (SQLITE_NOTADB). */
  | 'not-a-database'
  /** A SQLite file whose pages are damaged (SQLITE_CORRUPT). */
  | 'damaged'
  /** A SQLite file without fleetmesh's schema: none at all, or tables missing from it. */
  | 'no-schema'
  /** Any other failure to open or first read it (permissions, I/O, a lock held too long). */
  | 'unusable'

/** The database file cannot be used as it is; the message names the file and says what is wrong with it. */
export class StoreFileError extends CodedError<StoreFileErrorCode> {
  override name = 'StoreFileError'
  readonly path: string
  constructor(code: StoreFileErrorCode, path: string, message: string, options?: ErrorOptions) {
    super(code, message, options)
    this.path = path
  }
}

export interface OpenOptions {
  /**
   * Make a new database when the file is missing or empty (default). Without it,
   * a missing or empty file, or one without the schema, is a StoreFileError:
   * the caller expected an existing store there.
   */
  create?: boolean
}

/** A file lock held by another process (another coordinator, a backup) is waited for this long. */
const BUSY_TIMEOUT_MS = 5000

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
  `
  -- The Nix binary cache: one narinfo per store path; the NAR is the blob named nar_sha256.
  CREATE TABLE nix_narinfos (
    hash TEXT PRIMARY KEY,
    store_path TEXT NOT NULL,
    narinfo TEXT NOT NULL,
    nar_sha256 TEXT NOT NULL,
    nar_size INTEGER NOT NULL,
    -- JSON array of store path basenames
    refs TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    -- last push or query by an admin; retention's grace period runs from here
    touched_at INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX nix_narinfos_nar ON nix_narinfos (nar_sha256);
  CREATE INDEX nix_narinfos_touched ON nix_narinfos (touched_at);
  `,
  `
  -- Successful reads, counted apart from the hash-chained audit log so that polling
  -- cannot drown the changes: one row per admin, op and window. Not chained, and
  -- bounded (the least recently updated rows are dropped).
  CREATE TABLE audit_reads (
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    peer_id TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    count INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (actor, action, window_start)
  ) STRICT;
  CREATE INDEX audit_reads_last ON audit_reads (last_at);
  `,
  `
  -- The signed revocation list (protocol/revocation.ts): entry seq as the admin signed it.
  -- Rows of revocations without an entry here (from before this table) are enforced by
  -- the coordinator only; "fleetmesh admin revoke" issues them again as signed entries.
  CREATE TABLE revocation_log (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    serial TEXT NOT NULL,
    at INTEGER NOT NULL,
    envelope BLOB NOT NULL
  ) STRICT;
  CREATE TRIGGER revocation_log_no_update BEFORE UPDATE ON revocation_log
    BEGIN SELECT RAISE(ABORT, 'the revocation list is append-only'); END;
  CREATE TRIGGER revocation_log_no_delete BEFORE DELETE ON revocation_log
    BEGIN SELECT RAISE(ABORT, 'the revocation list is append-only'); END;
  `,
  `
  -- Rollouts in waves (coordinator/rollout-engine.ts): the signed release and its held
  -- rollback manifests are rows of manifests; here are the policy, the wave plan (JSON
  -- array of waves of machine names), each machine's desired manifest before the
  -- rollout (to withhold the release again on a halt) and where the rollout stands.
  CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    manifest_id TEXT NOT NULL REFERENCES manifests (id),
    policy TEXT NOT NULL,
    plan TEXT NOT NULL,
    previous TEXT NOT NULL,
    rollbacks TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    wave INTEGER NOT NULL,
    wave_started_at INTEGER NOT NULL,
    soak_started_at INTEGER,
    rolled_back INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX rollouts_state ON rollouts (state);
  `,
  `
  -- Signed tag records (protocol/machine-tags.ts, coordinator/sqlite-tags.ts): the latest
  -- one accepted per machine, sent to its agent; machines.tags holds the tags it gave.
  CREATE TABLE machine_tags (
    machine TEXT PRIMARY KEY REFERENCES machines (name),
    version INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    signed_by TEXT NOT NULL,
    at INTEGER NOT NULL
  ) STRICT;
  `,
  `
  -- The software the agent's latest hello named (its version), for the dashboard and machines.
  ALTER TABLE machines ADD COLUMN agent_version TEXT;
  `,
  `
  -- The transport under the connection machines.path describes (net/transports.ts); null until the
  -- agent connects to a coordinator that records it.
  ALTER TABLE machines ADD COLUMN transport TEXT CHECK (transport IN ('tcp', 'quic'));
  `,
]

export const SCHEMA_VERSION = MIGRATIONS.length

/**
 * Opens the database at `path` with durable settings and the current schema,
 * creating it if needed unless `create` is false; ":memory:" gives a private
 * in-memory database.
 */
export async function openDatabase(path: string, options: OpenOptions = {}): Promise<DatabaseSync> {
  const create = options.create ?? true
  if (path !== ':memory:') {
    if (!create && (await fileSize(path)) === undefined)
      throw new StoreFileError('missing', path, `${path} is missing`)
    await prepareFile(path)
  }
  let db: DatabaseSync
  try {
    db = new DatabaseSync(path, { enableForeignKeyConstraints: true })
  } catch (err) {
    throw storeFileError(path, err)
  }
  try {
    // Looked at before anything is written, so a refused file is left exactly as it was.
    if (userVersion(db) === 0) await checkUnused(db, path, create)
    configure(db)
    migrate(db, path)
    return db
  } catch (err) {
    db.close()
    throw storeFileError(path, err)
  }
}

/**
 * A file with no fleetmesh schema yet (user_version 0) is a new database only
 * where one may be created, and only if it holds nothing else.
 */
async function checkUnused(db: DatabaseSync, path: string, create: boolean): Promise<void> {
  const objects = integer(db.prepare('SELECT count(*) AS n FROM sqlite_schema').get() ?? {}, 'n')
  if (objects > 0) {
    throw new StoreFileError(
      'no-schema',
      path,
      `${path} is a SQLite database, but not a fleetmesh store: it has no fleetmesh schema version and holds ${objects} other tables or indexes`,
    )
  }
  if (create) return
  const empty = ((await fileSize(path)) ?? 0) === 0
  throw new StoreFileError(
    empty ? 'empty' : 'no-schema',
    path,
    empty ? `${path} is empty (0 bytes)` : `${path} is a SQLite database without the fleetmesh schema`,
  )
}

/** What went wrong opening or first reading `path`, as a StoreFileError naming it (typed errors pass through). */
export function storeFileError(path: string, err: unknown): Error {
  if (err instanceof StoreFileError || err instanceof StoreSchemaError) return err
  const sqlite = sqliteCode(err)
  const detail = errorMessage(err)
  if (sqlite === SQLITE_NOTADB)
    return new StoreFileError('not-a-database', path, `${path} is not a SQLite database (${detail})`, {
      cause: err,
    })
  if (sqlite === SQLITE_CORRUPT)
    return new StoreFileError('damaged', path, `${path} is damaged (${detail})`, { cause: err })
  if (/no such (table|column)/.test(detail))
    return new StoreFileError(
      'no-schema',
      path,
      `${path} is missing part of the fleetmesh schema (${detail})`,
      {
        cause: err,
      },
    )
  return new StoreFileError('unusable', path, `cannot open ${path}: ${detail}`, { cause: err })
}

const SQLITE_CORRUPT = 11
const SQLITE_NOTADB = 26

/** The primary SQLite result code of a node:sqlite error (extended codes carry it in the low byte). */
function sqliteCode(err: unknown): number | undefined {
  if (!(err instanceof Error) || !('errcode' in err) || typeof err.errcode !== 'number') return undefined
  return err.errcode & 0xff
}

function userVersion(db: DatabaseSync): number {
  return integer(db.prepare('PRAGMA user_version').get() ?? {}, 'user_version')
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
  const version = userVersion(db)
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
