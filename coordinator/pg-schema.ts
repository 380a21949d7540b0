/**
 * The PostgreSQL store's schema and its migrations: the tables of the SQLite
 * store (sqlite-schema.ts) in PostgreSQL's types (bytes as bytea, times and
 * counters as int8, JSON as text decoded by the same code as SQLite's), with
 * the audit log and the revocation list append-only by trigger. The version is
 * the row of fleetmesh_schema; migrations run in one transaction under an
 * advisory lock, so coordinators starting together migrate once, and re-running
 * them is a no-op. A database written by a newer fleetmesh is refused.
 */
import { errorMessage } from '../lib/index.ts'
import { type PgDb, PgStoreError, redactUrl, sqlState } from './pg-db.ts'
import { integer } from './sqlite-rows.ts'
import { StoreSchemaError } from './store.ts'

/** migrations[n] takes the schema from version n to n + 1. Append only, as in sqlite-schema.ts. */
export const PG_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE fleet (
    singleton int4 PRIMARY KEY CHECK (singleton = 1),
    fleet_id text NOT NULL,
    fleet_root text NOT NULL
  );
  CREATE TABLE machines (
    name text PRIMARY KEY,
    peer_id text NOT NULL UNIQUE,
    public_key text NOT NULL,
    tags text NOT NULL,
    facts text NOT NULL,
    enrolled_at int8 NOT NULL,
    last_seen int8,
    path text CHECK (path IN ('direct', 'relayed')),
    agent_version text
  );
  -- Kept forever: an enrollment token must never work twice. The primary key is what
  -- makes two coordinators racing with one token end with one enrollment.
  CREATE TABLE used_tokens (
    nonce text PRIMARY KEY,
    machine text NOT NULL REFERENCES machines (name),
    used_at int8 NOT NULL
  );
  CREATE TABLE manifests (
    id text PRIMARY KEY,
    sequence int8 NOT NULL UNIQUE,
    rollout_id text NOT NULL,
    generation text NOT NULL,
    targets text NOT NULL,
    envelope bytea NOT NULL,
    submitted_by text NOT NULL,
    submitted_at int8 NOT NULL,
    expires_at int8 NOT NULL,
    machines text NOT NULL
  );
  CREATE INDEX manifests_rollout ON manifests (rollout_id);
  CREATE INDEX manifests_expiry ON manifests (expires_at);
  CREATE TABLE desired (
    machine text PRIMARY KEY REFERENCES machines (name),
    manifest_id text NOT NULL REFERENCES manifests (id)
  );
  CREATE INDEX desired_manifest ON desired (manifest_id);
  CREATE TABLE statuses (
    machine text NOT NULL REFERENCES machines (name),
    seq int8 NOT NULL,
    report text NOT NULL,
    envelope bytea NOT NULL,
    received_at int8 NOT NULL,
    -- Copied out of the report (pg-statuses.ts statusKeys) for the log and rollout lookups:
    -- json operators refuse a document holding an escaped NUL, which an update's log may.
    manifest_id text,
    rollout_id text,
    carries_log boolean NOT NULL,
    PRIMARY KEY (machine, seq)
  );
  CREATE TABLE latest_status (
    machine text PRIMARY KEY REFERENCES machines (name),
    seq int8 NOT NULL,
    FOREIGN KEY (machine, seq) REFERENCES statuses (machine, seq)
  );
  CREATE TABLE audit (
    idx int8 PRIMARY KEY,
    at int8 NOT NULL,
    peer_id text NOT NULL,
    actor text,
    action text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail text NOT NULL,
    request bytea,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    sig bytea NOT NULL
  );
  -- The hash chain detects tampering; these stop this program's own bugs from doing it.
  CREATE FUNCTION fleetmesh_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;
  CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_append_only();
  CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION fleetmesh_append_only();
  CREATE TABLE audit_reads (
    actor text NOT NULL,
    action text NOT NULL,
    window_start int8 NOT NULL,
    peer_id text NOT NULL,
    first_at int8 NOT NULL,
    last_at int8 NOT NULL,
    count int8 NOT NULL,
    detail text NOT NULL,
    PRIMARY KEY (actor, action, window_start)
  );
  CREATE INDEX audit_reads_last ON audit_reads (last_at);
  CREATE TABLE revocations (
    serial text PRIMARY KEY,
    reason text NOT NULL,
    revoked_at int8 NOT NULL
  );
  CREATE TABLE revocation_log (
    seq int8 PRIMARY KEY,
    hash text NOT NULL,
    serial text NOT NULL,
    at int8 NOT NULL,
    envelope bytea NOT NULL
  );
  CREATE TRIGGER revocation_log_no_change BEFORE UPDATE OR DELETE ON revocation_log
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_append_only();
  CREATE TRIGGER revocation_log_no_truncate BEFORE TRUNCATE ON revocation_log
    FOR EACH STATEMENT EXECUTE FUNCTION fleetmesh_append_only();
  CREATE TABLE nonces (
    nonce text PRIMARY KEY,
    expires_at int8 NOT NULL
  );
  CREATE INDEX nonces_expiry ON nonces (expires_at);
  CREATE TABLE nix_narinfos (
    hash text PRIMARY KEY,
    store_path text NOT NULL,
    narinfo text NOT NULL,
    nar_sha256 text NOT NULL,
    nar_size int8 NOT NULL,
    refs text NOT NULL,
    added_at int8 NOT NULL,
    touched_at int8 NOT NULL
  );
  CREATE INDEX nix_narinfos_nar ON nix_narinfos (nar_sha256);
  CREATE INDEX nix_narinfos_touched ON nix_narinfos (touched_at);
  CREATE TABLE rollouts (
    id text PRIMARY KEY,
    manifest_id text NOT NULL REFERENCES manifests (id),
    policy text NOT NULL,
    plan text NOT NULL,
    previous text NOT NULL,
    rollbacks text NOT NULL,
    state text NOT NULL,
    reason text,
    wave int8 NOT NULL,
    wave_started_at int8 NOT NULL,
    soak_started_at int8,
    rolled_back int8 NOT NULL,
    created_at int8 NOT NULL,
    updated_at int8 NOT NULL
  );
  CREATE INDEX rollouts_state ON rollouts (state);
  CREATE TABLE machine_tags (
    machine text PRIMARY KEY REFERENCES machines (name),
    version int8 NOT NULL,
    envelope bytea NOT NULL,
    signed_by text NOT NULL,
    at int8 NOT NULL
  );
  `,
  // 2: change notes for the other coordinators sharing the database (pg-notify.ts), sent by
  // the transaction that commits the change. Arguments: the note's kind, then the row's key columns.
  `
  CREATE FUNCTION fleetmesh_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      changed jsonb := to_jsonb(NEW);
      note jsonb := jsonb_build_object('k', TG_ARGV[0], 'o', current_setting('fleetmesh.origin', true));
    BEGIN
      FOR i IN 1 .. TG_NARGS - 1 LOOP
        note := note || jsonb_build_object(TG_ARGV[i], changed -> TG_ARGV[i]);
      END LOOP;
      PERFORM pg_notify('fleetmesh', note::text);
      RETURN NULL;
    END $$;
  CREATE TRIGGER desired_notify AFTER INSERT OR UPDATE ON desired
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('desired', 'machine');
  CREATE TRIGGER statuses_notify AFTER INSERT ON statuses
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('status', 'machine', 'seq');
  CREATE TRIGGER machine_tags_notify AFTER INSERT OR UPDATE ON machine_tags
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('tags', 'machine');
  CREATE TRIGGER rollouts_notify AFTER INSERT OR UPDATE ON rollouts
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('rollout', 'id');
  CREATE TRIGGER manifests_notify AFTER INSERT ON manifests
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('manifest', 'id');
  CREATE TRIGGER machines_notify AFTER INSERT ON machines
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('enrolled', 'name');
  CREATE TRIGGER revocations_notify AFTER INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('revoked', 'serial');
  -- The fleet root's signed list of the fleet's coordinators (protocol/coordinator-list.ts), newest only.
  CREATE TABLE coordinator_list (
    singleton int4 PRIMARY KEY CHECK (singleton = 1),
    version int8 NOT NULL,
    envelope bytea NOT NULL
  );
  CREATE TRIGGER coordinator_list_notify AFTER INSERT OR UPDATE ON coordinator_list
    FOR EACH ROW EXECUTE FUNCTION fleetmesh_notify('coordinators', 'version');
  `,
  `
  -- The transport under the connection machines.path describes, as in sqlite-schema.ts.
  ALTER TABLE machines ADD COLUMN IF NOT EXISTS transport text CHECK (transport IN ('tcp', 'quic'));
  `,
]

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length

/** Brings the database at `url` to PG_SCHEMA_VERSION; safe to run again and from several processes at once. */
export async function migratePostgres(db: PgDb, url: string): Promise<void> {
  try {
    await db.transaction(['migrate'], async (tx) => {
      const [found] = await tx.rows("SELECT (to_regclass('fleetmesh_schema') IS NOT NULL)::int4 AS found")
      if (found?.found !== 1) {
        const [other] = await tx.rows(
          'SELECT count(*) AS n FROM pg_tables WHERE schemaname = current_schema()',
        )
        const n = other === undefined ? 0 : integer(other, 'n')
        if (n > 0)
          throw new PgStoreError(
            'no-schema',
            `${redactUrl(url)} is not a fleetmesh store: it has no fleetmesh_schema table and holds ${n} other tables; ` +
              'give fleetmesh a database of its own',
          )
        await tx.run(`CREATE TABLE fleetmesh_schema (
          singleton int4 PRIMARY KEY CHECK (singleton = 1), version int4 NOT NULL)`)
        await tx.run('INSERT INTO fleetmesh_schema VALUES (1, 0)')
      }
      const [row] = await tx.rows('SELECT version FROM fleetmesh_schema WHERE singleton = 1')
      const version = row === undefined ? 0 : integer(row, 'version')
      if (version > PG_MIGRATIONS.length)
        throw new StoreSchemaError(
          `${redactUrl(url)} has schema version ${version}, but this fleetmesh knows versions up to ` +
            `${PG_MIGRATIONS.length}; it was written by a newer fleetmesh. Upgrade fleetmesh`,
        )
      for (let v = version; v < PG_MIGRATIONS.length; v++) {
        await tx.run(PG_MIGRATIONS[v] as string)
        await tx.run('UPDATE fleetmesh_schema SET version = $1', [v + 1])
      }
    })
  } catch (err) {
    throw connectError(url, err)
  }
}

/** Class 08 (connection; not 08P01, a protocol violation), 28 (authorization), 3D000 (no such database). */
const UNREACHABLE = /^(08(?!P01)|28|3D000)/

/** A failure to reach the database, as a PgStoreError naming it; typed errors pass through. */
export function connectError(url: string, err: unknown): Error {
  if (err instanceof PgStoreError || err instanceof StoreSchemaError) return err
  const state = sqlState(err) ?? ''
  const network =
    err instanceof Error && /ECONNREFUSED|ENOENT|ENOTFOUND|EHOSTUNREACH|timeout/i.test(err.message)
  if (UNREACHABLE.test(state) || network)
    return new PgStoreError(
      'unreachable',
      `cannot reach the PostgreSQL store at ${redactUrl(url)}: ${errorMessage(err)}; ` +
        'check that the server is running and the URL, user and database are right',
      { cause: err },
    )
  return err instanceof Error ? err : new Error(errorMessage(err))
}
