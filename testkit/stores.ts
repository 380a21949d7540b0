/**
 * The store's contract tests, once per kind of store: SQLite (a file in a
 * temporary directory) and PostgreSQL (a fresh database in a private test
 * cluster, testkit/postgres.ts). A test file wraps its describes in
 * {@link describeStores}; the PostgreSQL variant skips, saying why, where no
 * server can run. The cluster starts on the first open() of a file and stops
 * after the file's last test.
 *
 * @example
 *
 * ```ts
 * describeStores((kind) => {
 *   let store: FleetStore
 *   beforeEach(async () => { store = await kind.open() })
 *   afterEach(() => store.close())
 *   it('…', async () => { … })
 * })
 * ```
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe } from 'vitest'
import { openPostgresStore } from '../coordinator/pg-store.ts'
import { openSqliteStore } from '../coordinator/sqlite-store.ts'
import type { FleetStore } from '../coordinator/store.ts'
import { type PgCluster, postgresUnavailable, startPostgres } from './postgres.ts'

export type StoreKindName = 'sqlite' | 'postgres'

export interface StoreKind {
  name: StoreKindName
  /** Why this kind cannot run here (its tests are skipped), or undefined. */
  skip: string | undefined
  /** A store over a new, empty database, which becomes this kind's current one. */
  open(): Promise<FleetStore>
  /** Another store over the current database: a restart, or a second coordinator sharing it. */
  reopen(): Promise<FleetStore>
  /** Removes the databases and stops what the kind started; the stores must be closed first. */
  close(): Promise<void>
}

function sqliteKind(): StoreKind {
  const dirs: string[] = []
  let current: string | undefined
  return {
    name: 'sqlite',
    skip: undefined,
    async open() {
      const dir = await mkdtemp(join(tmpdir(), 'fm-store-'))
      dirs.push(dir)
      current = join(dir, 'state', 'coordinator.db')
      return openSqliteStore(current)
    },
    async reopen() {
      if (current === undefined) throw new Error('reopen() before open()')
      return openSqliteStore(current)
    },
    async close() {
      await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
    },
  }
}

function postgresKind(): StoreKind {
  let cluster: Promise<PgCluster> | undefined
  let current: string | undefined
  return {
    name: 'postgres',
    skip: postgresUnavailable(),
    async open() {
      cluster ??= startPostgres()
      current = await (await cluster).createDatabase()
      return openPostgresStore(current)
    },
    async reopen() {
      if (current === undefined) throw new Error('reopen() before open()')
      return openPostgresStore(current)
    },
    async close() {
      const started = cluster
      cluster = undefined
      if (started !== undefined) await (await started).stop()
    },
  }
}

/** Every kind of store, SQLite first; each kind keeps its own current database. */
export function storeKinds(): StoreKind[] {
  return [sqliteKind(), postgresKind()]
}

/** Runs `body` in a describe per kind of store, skipping kinds that cannot run here. */
export function describeStores(body: (kind: StoreKind) => void): void {
  for (const kind of storeKinds()) {
    const title = kind.skip === undefined ? kind.name : `${kind.name} (skipped: ${kind.skip})`
    describe.skipIf(kind.skip !== undefined)(title, () => {
      afterAll(() => kind.close())
      body(kind)
    })
  }
}
