/**
 * The embedded store's file and schema: the SQLite file's permissions, the
 * connection settings that make a commit durable, and the append-only list of
 * migrations that brings any older database up to {@link SCHEMA_VERSION}.
 * Used by sqlite-store.ts when it opens a database.
 */
import { chmod, mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { integer } from './sqlite-rows.ts'
import { StoreSchemaError } from './store.ts'

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
]

export const SCHEMA_VERSION = MIGRATIONS.length

/**
 * Opens (creating if needed) the database at `path` with durable settings and
 * the current schema; ":memory:" gives a private in-memory database.
 */
export async function openDatabase(path: string): Promise<DatabaseSync> {
  if (path !== ':memory:') await prepareFile(path)
  const db = new DatabaseSync(path, { enableForeignKeyConstraints: true })
  try {
    configure(db)
    migrate(db, path)
    return db
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
