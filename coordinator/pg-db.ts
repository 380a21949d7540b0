/**
 * The PostgreSQL store's connection: a bounded pg.Pool whose sessions commit
 * durably, values decoded the way sqlite-rows.ts expects them (int8 as a safe
 * JS number, bytea as a plain Uint8Array), and transactions serialised where a
 * rule needs it by transaction-scoped advisory locks, so several coordinators
 * sharing one database keep the rules one SQLite file keeps by being one file.
 */
import pg from 'pg'
import { CodedError, errorMessage } from '../lib/index.ts'
import type { Row } from './sqlite-rows.ts'
import { StoreSchemaError } from './store.ts'

export interface PgOptions {
  /** Connections per coordinator (default 10). */
  poolSize?: number
  /** A statement, lock waits included, that runs longer is cancelled (default 30 s). */
  statementTimeoutMs?: number
  /**
   * Who writes: the coordinator's peer id, set as the sessions' `fleetmesh.origin`
   * so the change notifications its writes cause (pg-notify.ts) name it, and it
   * can tell its own changes from other coordinators'.
   */
  origin?: string
}

export type PgStoreErrorCode =
  /** The URL is not a postgres:// or postgresql:// URL pg can use. */
  | 'bad-url'
  /** The server could not be reached, or refused the login. */
  | 'unreachable'
  /** The database holds other tables but no fleetmesh schema. */
  | 'no-schema'

/** The database cannot be used; the message names it by its URL without the password. */
export class PgStoreError extends CodedError<PgStoreErrorCode> {
  override name = 'PgStoreError'
}

/**
 * Advisory lock keys, as (class, key) pairs in fleetmesh's own class so they
 * cannot meet another application's locks in a shared database.
 */
export const LOCK_CLASS = 0x464d5354 // 'FMST'
export const LOCKS = {
  /** Schema migrations: one coordinator migrates, the others wait and find it done. */
  migrate: 1,
  /** The audit chain: appends take turns, so the chain stays one line. */
  audit: 2,
  /**
   * Manifests, desired states, enrollments and tags: the manifest sequence rises
   * strictly, and an enrolling machine sees every manifest committed before it.
   */
  fleet: 3,
  /** The signed revocation list's head. */
  revocations: 4,
  /** The Nix cache: retention's check and delete see no push slip between them. */
  nix: 5,
  /**
   * Rollout control, session-level (pg-notify.ts PgLease): held by the one
   * coordinator that moves rollouts on, released when its connection ends.
   */
  rollouts: 6,
} as const
export type LockName = keyof typeof LOCKS

/** One statement runner: the pool outside a transaction, a client inside one. */
export interface Sql {
  rows(text: string, values?: readonly unknown[]): Promise<Row[]>
  /** The number of rows the statement changed. */
  run(text: string, values?: readonly unknown[]): Promise<number>
}

const INT8_OID = 20
const BYTEA_OID = 17

/** int8 values (timestamps in ms, sequences, counts) are far below 2^53: a larger one is damage. */
function parseInt8(value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n))
    throw new StoreSchemaError(`an int8 column holds ${value}, beyond 2^53; the database is damaged`)
  return n
}

const parseBytea = pg.types.getTypeParser(BYTEA_OID, 'text') as (value: string) => Buffer

const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8_OID) return parseInt8
    // A plain Uint8Array, like node:sqlite's blobs: records compare equal whichever store made them.
    if (oid === BYTEA_OID) return (value: string) => Uint8Array.from(parseBytea(value))
    return pg.types.getTypeParser(oid, format)
  }) as pg.CustomTypesConfig['getTypeParser'],
}

/** The URL as it may be shown: without its password. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '****'
    if (parsed.searchParams.has('password')) parsed.searchParams.set('password', '****')
    return parsed.toString()
  } catch {
    return url.replace(/:[^:@/]*@/, ':****@')
  }
}

export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//.test(spec)
}

/** Peer ids are base58; anything else would not survive the startup options' quoting. */
const ORIGIN = /^[A-Za-z0-9]{1,128}$/

/** The settings every fleetmesh session starts with, pooled or dedicated (pg-notify.ts). */
export function sessionConfig(url: string, options: PgOptions = {}): pg.ClientConfig {
  if (!isPostgresUrl(url))
    throw new PgStoreError('bad-url', `${redactUrl(url)} is not a postgres:// or postgresql:// URL`)
  if (options.origin !== undefined && !ORIGIN.test(options.origin))
    throw new PgStoreError('bad-url', `origin "${options.origin}" is not a peer id`)
  const origin = options.origin === undefined ? '' : ` -c fleetmesh.origin=${options.origin}`
  return {
    connectionString: url,
    application_name: 'fleetmesh-coordinator',
    // An acknowledged report must survive a crash of the server: never trust the database's default.
    options: `-c synchronous_commit=on${origin}`,
    connectionTimeoutMillis: 10_000,
    types,
  }
}

export function createPool(url: string, options: PgOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    ...sessionConfig(url, options),
    max: options.poolSize ?? 10,
    statement_timeout: options.statementTimeoutMs ?? 30_000,
    // A transaction left open by a stuck coordinator must not hold the advisory locks forever.
    idle_in_transaction_session_timeout: 60_000,
  })
  // An idle client losing its connection (server restart) must not crash the coordinator;
  // the pool drops it and the next query connects again.
  pool.on('error', () => {})
  return pool
}

function runner(client: pg.Pool | pg.PoolClient): Sql {
  return {
    async rows(text, values) {
      return (await client.query(text, values as unknown[] | undefined)).rows as Row[]
    },
    async run(text, values) {
      return (await client.query(text, values as unknown[] | undefined)).rowCount ?? 0
    },
  }
}

/** Deadlocks and serialisation failures are retried: the transaction did nothing. */
const RETRIED = new Set(['40P01', '40001'])
const ATTEMPTS = 3

export function sqlState(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

/** The pool, and transactions over it. */
export class PgDb {
  readonly pool: pg.Pool
  readonly sql: Sql

  constructor(pool: pg.Pool) {
    this.pool = pool
    this.sql = runner(pool)
  }

  /**
   * Runs fn in one transaction after taking the named advisory locks (in a fixed
   * order, so two transactions never wait on each other's). Resolves only once
   * COMMIT has returned, which with synchronous_commit on means the commit is on
   * the server's disk; any throw rolls everything back.
   */
  async transaction<T>(locks: readonly LockName[], fn: (tx: Sql) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#once(locks, fn)
      } catch (err) {
        if (attempt >= ATTEMPTS || !RETRIED.has(sqlState(err) ?? '')) throw err
      }
    }
  }

  async #once<T>(locks: readonly LockName[], fn: (tx: Sql) => Promise<T>): Promise<T> {
    const client = await this.pool.connect()
    let broken: Error | undefined
    // A checked-out client has no listener of the pool's: its connection dying (a server restart)
    // would be an unhandled 'error' that ends the coordinator. The running query rejects anyway.
    const onError = (err: Error) => {
      broken = err
    }
    client.on('error', onError)
    try {
      await client.query('BEGIN')
      try {
        const tx = runner(client)
        for (const lock of [...locks].sort((a, b) => LOCKS[a] - LOCKS[b]))
          await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCKS[lock]])
        const result = await fn(tx)
        await client.query('COMMIT')
        return result
      } catch (err) {
        await client.query('ROLLBACK').catch((rollbackErr: unknown) => {
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(errorMessage(rollbackErr))
        })
        throw err
      }
    } finally {
      // A client whose ROLLBACK failed is in an unknown state: destroy it rather than reuse it.
      client.removeListener('error', onError)
      client.release(broken)
    }
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end()
  }
}
