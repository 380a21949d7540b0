/**
 * `fleetmesh store copy` moves a fleet from its SQLite file to PostgreSQL with
 * every row as it was: the audit chain verifies against the same coordinator
 * key, used tokens and nonces stay used, reports and manifests carry over; a
 * target holding anything is refused. `fleetmesh store migrate` brings a
 * database to the current schema.
 */

import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signAuditHash } from '../../coordinator/audit.ts'
import { openPostgresStore, PG_SCHEMA_VERSION } from '../../coordinator/pg-store.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import { type FleetStore, type StatusRecord, StoreConflictError } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { verifyAuditLog } from '../../protocol/audit-log.ts'
import { sampleManifest, sampleStatus } from '../../testkit/fixtures.ts'
import { runCli } from '../../testkit/harness.ts'
import { manifestRecord } from '../../testkit/manifest-record.ts'
import { type PgCluster, postgresUnavailable, startPostgres } from '../../testkit/postgres.ts'

const unavailable = postgresUnavailable()
const coordinator = PrivateKey.generate()
const admin = PrivateKey.generate()

/** A SQLite store with a bit of everything a fleet holds. */
async function fill(store: FleetStore, nonce: string): Promise<void> {
  await store.initFleet('acme', admin.publicKey.toString())
  const key = PrivateKey.generate()
  const peer = { peerId: key.toPeerId().toString(), publicKey: key.publicKey.toString() }
  await store.enrollMachine({ name: 'edge-1', ...peer, tags: ['lab'], facts: {}, nonce, at: 1000 })
  const manifest = sampleManifest({ sequence: 1, targets: { machines: ['edge-1'], tags: [] } })
  await store.addManifest(manifestRecord(manifest, admin), ['edge-1'])
  for (let seq = 1; seq <= 3; seq++) {
    const report = sampleStatus({ machine: 'edge-1', seq, manifestId: manifest.id })
    await store.recordStatus({ machine: 'edge-1', seq, report, envelope: randomBytes(50), receivedAt: seq })
  }
  const sign = signAuditHash(coordinator)
  for (let i = 0; i < 5; i++) {
    const entry = {
      at: i,
      peerId: peer.peerId,
      actor: null,
      action: 'deploy',
      detail: `d${i}`,
      request: null,
    }
    await store.appendAudit({ ...entry, outcome: 'error' }, sign)
  }
  await store.revoke('ab'.repeat(16), 'stolen', 5)
  await store.rememberNonce('replayed', 9e12)
}

describe.skipIf(unavailable !== undefined)(
  `fleetmesh store copy and migrate${unavailable === undefined ? '' : ` (skipped: ${unavailable})`}`,
  () => {
    let cluster: PgCluster
    let dir: string
    beforeAll(async () => {
      cluster = await startPostgres()
      dir = await mkdtemp(join(tmpdir(), 'fm-copy-'))
    })
    afterAll(async () => {
      await cluster?.stop()
      await rm(dir, { recursive: true, force: true })
    })

    it('copies every row, the audit chain verifies after, and a non-empty target is refused', async () => {
      const path = join(dir, 'fleet.db')
      const nonce = randomBytes(16).toString('hex')
      const source = await openSqliteStore(path)
      await fill(source, nonce)
      const audit = await source.listAudit(0, 100)
      const machines = await source.listMachines()
      const history = await source.statusHistory('edge-1', 10)
      await source.close()

      const url = await cluster.createDatabase()
      const copied = await runCli(['store', 'copy', '--from', `sqlite:${path}`, '--to', url])
      expect(copied.code, copied.stderr).toBe(0)
      expect(copied.stdout).toContain('audit log up to record 5')

      const target = await openPostgresStore(url)
      try {
        expect(await target.getFleet()).toEqual({ fleetId: 'acme', fleetRoot: admin.publicKey.toString() })
        expect(await target.listMachines()).toEqual(machines)
        expect(await target.statusHistory('edge-1', 10)).toEqual(history)
        // the columns PostgreSQL keeps beside a report were filled in by the copy
        const newest = history[0] as StatusRecord
        expect(await target.latestRolloutReport('edge-1', newest.report.rolloutId ?? '')).toEqual(newest)
        const copiedAudit = await target.listAudit(0, 100)
        expect(copiedAudit).toEqual(audit)
        expect(verifyAuditLog(copiedAudit, { coordinator: coordinator.publicKey })).toEqual({
          ok: true,
          count: 5,
        })
        // …and the chain goes on where it stopped.
        const next = await target.appendAudit(
          { ...audit[0]!, at: 99, request: null },
          signAuditHash(coordinator),
        )
        expect(next.index).toBe(6)
        expect(await target.maxSequence()).toBe(1)
        expect(await target.rememberNonce('replayed', 9e12)).toBe(false)
        expect(await target.revokedSerials()).toEqual(new Set(['ab'.repeat(16)]))
        const key = PrivateKey.generate()
        const again = {
          name: 'edge-2',
          peerId: key.toPeerId().toString(),
          publicKey: key.publicKey.toString(),
        }
        const reuse = await target
          .enrollMachine({ ...again, tags: [], facts: {}, nonce, at: 2000 })
          .catch((e: unknown) => e)
        expect(reuse).toBeInstanceOf(StoreConflictError)
        expect((reuse as StoreConflictError).code).toBe('token-used')
      } finally {
        await target.close()
      }

      const twice = await runCli(['store', 'copy', '--from', `sqlite:${path}`, '--to', url])
      expect(twice.code).toBe(1)
      expect(twice.stderr).toMatch(/already holds data.*empty database/)
    })

    it('migrates a database to the current schema, and refuses a URL naming no store', async () => {
      const url = await cluster.createDatabase()
      const migrated = await runCli(['store', 'migrate', '--store', url])
      expect(migrated.code, migrated.stderr).toBe(0)
      expect(migrated.stdout).toContain(`schema version ${PG_SCHEMA_VERSION}`)
      const bad = await runCli(['store', 'migrate', '--store', 'mysql://db/fleet'])
      expect(bad.code).toBe(2)
      expect(bad.stderr).toContain('--store must be postgres://')
    })
  },
)
