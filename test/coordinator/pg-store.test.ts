/**
 * What only several coordinators sharing one PostgreSQL database can break:
 * two stores (two pools, as two coordinator processes would hold) racing on one
 * enrollment token, on the audit chain, on the manifest sequence, on a replay
 * nonce and on one report; migrations run at once and again; and what the
 * PostgreSQL store refuses (a newer schema, SQL that edits the audit log, a bad
 * URL, an unreachable server, a foreign database). The contract every store
 * keeps alone runs on both kinds in store.test.ts and its neighbours.
 */

import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { signAuditHash } from '../../coordinator/audit.ts'
import { PG_MIGRATIONS } from '../../coordinator/pg-schema.ts'
import { openPostgresStore, PG_SCHEMA_VERSION, PgStoreError } from '../../coordinator/pg-store.ts'
import {
  type AuditEntry,
  type FleetStore,
  type NewManifest,
  StoreConflictError,
  StoreSchemaError,
} from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { verifyAuditLog } from '../../protocol/audit-log.ts'
import { sampleManifest, sampleStatus } from '../../testkit/fixtures.ts'
import { manifestRecord } from '../../testkit/manifest-record.ts'
import { type PgCluster, postgresUnavailable, startPostgres } from '../../testkit/postgres.ts'

const hex = (n: number) => randomBytes(n).toString('hex')
const unavailable = postgresUnavailable()
const coordinatorKey = PrivateKey.generate()
const sign = signAuditHash(coordinatorKey)
const admin = PrivateKey.generate()

function enrollInput(name: string, nonce = hex(16)) {
  const key = PrivateKey.generate()
  const peer = { peerId: key.toPeerId().toString(), publicKey: key.publicKey.toString() }
  return { name, ...peer, tags: ['lab'], facts: {}, nonce, at: 1000 }
}

function newManifest(sequence: number): NewManifest {
  const manifest = sampleManifest({ sequence, targets: { machines: ['edge-1'], tags: [] } })
  return manifestRecord(manifest, admin)
}

function auditEntry(n: number): AuditEntry {
  return {
    at: 1000 + n,
    peerId: admin.toPeerId().toString(),
    actor: null,
    action: 'machines',
    outcome: 'error',
    detail: `entry ${n}`,
    request: null,
  }
}

/** Runs SQL as the operator would, outside fleetmesh. */
async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** One outcome per promise: its value, or the error it rejected with. */
const settle = <T>(promises: Promise<T>[]) =>
  Promise.all(
    promises.map((p) =>
      p.then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
    ),
  )

describe.skipIf(unavailable !== undefined)(
  `two coordinators on one PostgreSQL database${unavailable === undefined ? '' : ` (skipped: ${unavailable})`}`,
  () => {
    let cluster: PgCluster
    let url: string
    let a: FleetStore
    let b: FleetStore
    beforeAll(async () => {
      cluster = await startPostgres()
    })
    afterAll(async () => {
      await cluster?.stop()
    })
    beforeEach(async () => {
      url = await cluster.createDatabase()
      // Both start at once on an empty database: only one may migrate it.
      ;[a, b] = await Promise.all([openPostgresStore(url), openPostgresStore(url)])
    })
    afterEach(async () => {
      await a.close()
      await b.close()
    })

    it('the same enrollment token presented to both at once: exactly one wins', async () => {
      for (let round = 0; round < 20; round++) {
        const nonce = hex(16)
        const outcomes = await settle([
          a.enrollMachine(enrollInput(`a-${round}`, nonce)),
          b.enrollMachine(enrollInput(`b-${round}`, nonce)),
        ])
        const won = outcomes.filter((o) => 'value' in o)
        const lost = outcomes.flatMap((o) => ('error' in o ? [o.error] : []))
        expect(won).toHaveLength(1)
        expect(lost).toHaveLength(1)
        expect(lost[0]).toBeInstanceOf(StoreConflictError)
        expect((lost[0] as StoreConflictError).code).toBe('token-used')
      }
      expect(await a.listMachines()).toHaveLength(20)
    })

    it('audit records appended on both at once form one chain that verifies', async () => {
      const appends = Array.from({ length: 60 }, (_, i) =>
        (i % 2 === 0 ? a : b).appendAudit(auditEntry(i), sign),
      )
      const records = await Promise.all(appends)
      expect(records.map((r) => r.index).sort((x, y) => x - y)).toEqual(
        Array.from({ length: 60 }, (_, i) => i + 1),
      )
      const log = await b.listAudit(0, 1000)
      expect(verifyAuditLog(log, { coordinator: coordinatorKey.publicKey })).toEqual({ ok: true, count: 60 })
    })

    it('manifests submitted on both at once: sequences unique and rising in commit order', async () => {
      await a.enrollMachine(enrollInput('edge-1'))
      let refused = 0
      for (let round = 0; round < 30; round++) {
        const max = await a.maxSequence()
        // Each side read the same maximum: the lower may commit only before the higher.
        const outcomes = await settle([
          a.addManifest(newManifest(max + 1), ['edge-1']),
          b.addManifest(newManifest(max + 2), ['edge-1']),
        ])
        for (const o of outcomes) {
          if (!('error' in o)) continue
          expect(o.error).toBeInstanceOf(StoreConflictError)
          expect((o.error as StoreConflictError).code).toBe('stale-sequence')
          refused++
        }
      }
      const committed = await withClient(url, async (client) => {
        const result = await client.query(
          'SELECT sequence::int4 AS sequence FROM manifests ORDER BY pg_xact_commit_timestamp(xmin), sequence',
        )
        return result.rows.map((row: { sequence: number }) => row.sequence)
      })
      expect(committed.length + refused).toBe(60)
      expect(new Set(committed).size).toBe(committed.length)
      expect(committed).toEqual([...committed].sort((x, y) => x - y))
    })

    it('a replay nonce and a report seen by both at once count once', async () => {
      await a.enrollMachine(enrollInput('edge-1'))
      for (let round = 0; round < 10; round++) {
        const nonce = hex(16)
        const fresh = await Promise.all([a.rememberNonce(nonce, 9e12), b.rememberNonce(nonce, 9e12)])
        expect(fresh.filter(Boolean)).toHaveLength(1)
        const seq = round + 1
        const record = {
          machine: 'edge-1',
          seq,
          report: sampleStatus({ machine: 'edge-1', seq }),
          envelope: new Uint8Array(randomBytes(40)),
          receivedAt: 5000,
        }
        const stored = await Promise.all([a.recordStatus(record), b.recordStatus(record)])
        expect(stored.sort()).toEqual(['duplicate', 'stored'])
      }
      expect(await b.lastStatusSeq('edge-1')).toBe(10)
    })

    it('migrations run once when several coordinators start together, and again as a no-op', async () => {
      const fresh = await cluster.createDatabase()
      const stores = await Promise.all(Array.from({ length: 4 }, () => openPostgresStore(fresh)))
      await Promise.all(stores.map((s) => s.close()))
      const again = await openPostgresStore(fresh)
      await again.initFleet('acme', 'root')
      expect(await again.getFleet()).toEqual({ fleetId: 'acme', fleetRoot: 'root' })
      await again.close()
      const version = await withClient(fresh, (c) => c.query('SELECT version FROM fleetmesh_schema'))
      expect(version.rows).toEqual([{ version: PG_SCHEMA_VERSION }])
    })

    it('adds the transport column to a database of the schema before it, by one of several coordinators', async () => {
      const fresh = await cluster.createDatabase()
      const before = await openPostgresStore(fresh)
      await before.enrollMachine(enrollInput('edge-1'))
      await before.touchMachine('edge-1', { lastSeen: 77, path: 'relayed' })
      await before.close()
      // the database as the previous version left it: no transport column, one schema version less
      await withClient(fresh, (c) =>
        c.query(
          'ALTER TABLE machines DROP COLUMN transport; UPDATE fleetmesh_schema SET version = version - 1',
        ),
      )

      const stores = await Promise.all(Array.from({ length: 3 }, () => openPostgresStore(fresh)))
      const [first, second] = stores as [FleetStore, FleetStore, FleetStore]
      expect(await first.getMachine('edge-1')).toMatchObject({
        lastSeen: 77,
        path: 'relayed',
        transport: null,
      })
      await first.touchMachine('edge-1', { lastSeen: 88, path: 'direct', transport: 'quic' })
      expect(await second.getMachine('edge-1')).toMatchObject({ path: 'direct', transport: 'quic' })
      await Promise.all(stores.map((s) => s.close()))
      await withClient(fresh, async (c) => {
        expect((await c.query('SELECT version FROM fleetmesh_schema')).rows).toEqual([
          { version: PG_SCHEMA_VERSION },
        ])
        await c.query(PG_MIGRATIONS.at(-1) as string) // the step itself is safe to run again
        await expect(c.query("UPDATE machines SET transport = 'udp'")).rejects.toThrow(/check constraint/)
      })
    })

    it('refuses a database written by a newer fleetmesh', async () => {
      await withClient(url, (c) => c.query('UPDATE fleetmesh_schema SET version = version + 1'))
      const err = await openPostgresStore(url).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StoreSchemaError)
      expect((err as Error).message).toContain('newer fleetmesh')
    })

    it('keeps the audit log and the revocation list append-only against SQL', async () => {
      await a.appendAudit(auditEntry(1), sign)
      await withClient(url, async (c) => {
        await c.query("INSERT INTO revocation_log VALUES (1, 'hash', 'serial', 1, '\\x00')")
        for (const sql of [
          "UPDATE audit SET detail = 'x'",
          'DELETE FROM audit',
          'TRUNCATE audit',
          "UPDATE revocation_log SET serial = 'other'",
          'DELETE FROM revocation_log',
          'TRUNCATE revocation_log',
        ])
          await expect(c.query(sql), sql).rejects.toThrow(/append-only/)
      })
      expect(await a.listAudit(0, 10)).toHaveLength(1)
    })

    it('names a bad URL, an unreachable database and a foreign one, never showing the password', async () => {
      const bad = await openPostgresStore('mysql://fleet:hunter2@db/fleet').catch((e: unknown) => e)
      expect(bad).toBeInstanceOf(PgStoreError)
      expect((bad as PgStoreError).code).toBe('bad-url')
      expect((bad as Error).message).not.toContain('hunter2')

      const missing = `postgres://postgres:hunter2@/no_such_db?host=${encodeURIComponent(cluster.socketDir)}`
      const unreachable = await openPostgresStore(missing).catch((e: unknown) => e)
      expect(unreachable).toBeInstanceOf(PgStoreError)
      expect((unreachable as PgStoreError).code).toBe('unreachable')
      expect((unreachable as Error).message).toContain('no_such_db')
      expect((unreachable as Error).message).not.toContain('hunter2')

      const foreign = await cluster.createDatabase()
      await withClient(foreign, (c) => c.query('CREATE TABLE invoices (id int)'))
      const refused = await openPostgresStore(foreign).catch((e: unknown) => e)
      expect(refused).toBeInstanceOf(PgStoreError)
      expect((refused as PgStoreError).code).toBe('no-schema')
      const tables = await withClient(foreign, (c) => c.query("SELECT to_regclass('fleet') AS t"))
      expect(tables.rows).toEqual([{ t: null }])
    })
  },
)
