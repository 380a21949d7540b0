/**
 * Which FleetStore a coordinator (or `fleetmesh store …`) opens, from one
 * `--store` value: a postgres:// or postgresql:// URL for a PostgreSQL store
 * that several coordinators can share, `sqlite:<path>` for a SQLite file, or
 * nothing for the default, the SQLite file in the coordinator's state directory.
 */
import { CodedError } from '../lib/index.ts'
import { isPostgresUrl, type PgOptions, redactUrl } from './pg-db.ts'
import { openPostgresStore } from './pg-store.ts'
import type { OpenOptions } from './sqlite-schema.ts'
import { openSqliteStore } from './sqlite-store.ts'
import type { FleetStore } from './store.ts'

export type StoreSpec = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string }

/** A --store value that names no store fleetmesh can open. */
export class StoreSpecError extends CodedError<'bad-store'> {
  override name = 'StoreSpecError'
}

export const STORE_SPEC_USAGE = 'postgres://user@host/database, postgresql://…, or sqlite:<path>'

/** What `spec` names; undefined or empty is the SQLite file at `defaultPath`. */
export function parseStoreSpec(spec: string | undefined, defaultPath: string): StoreSpec {
  if (spec === undefined || spec === '') return { kind: 'sqlite', path: defaultPath }
  if (isPostgresUrl(spec)) return { kind: 'postgres', url: spec }
  if (spec.startsWith('sqlite:') && spec.length > 'sqlite:'.length)
    return { kind: 'sqlite', path: spec.slice('sqlite:'.length) }
  throw new StoreSpecError(
    'bad-store',
    `--store ${redactUrl(spec)} names no store; expected ${STORE_SPEC_USAGE}`,
  )
}

/** The store as it may be shown in messages: the file, or the URL without its password. */
export function describeStore(spec: StoreSpec): string {
  return spec.kind === 'sqlite' ? spec.path : redactUrl(spec.url)
}

/**
 * Opens the store `spec` names (see parseStoreSpec). `create` applies to a SQLite
 * file only: a PostgreSQL database is made by its operator, and migrated here.
 */
export async function openStore(
  spec: string | undefined,
  defaultPath: string,
  options: OpenOptions & PgOptions = {},
): Promise<FleetStore> {
  const parsed = parseStoreSpec(spec, defaultPath)
  return parsed.kind === 'postgres'
    ? openPostgresStore(parsed.url, options)
    : openSqliteStore(parsed.path, { ...(options.create === undefined ? {} : { create: options.create }) })
}
