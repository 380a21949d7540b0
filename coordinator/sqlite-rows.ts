/**
 * Reading rows back from the embedded store: typed column accessors that turn a
 * damaged database into a {@link StoreSchemaError} naming the column, and the
 * decoders from rows to the records of store.ts; plus preparing statements and
 * checking a query's limit. Used by sqlite-store.ts and sqlite-narinfos.ts (and
 * sqlite-schema.ts for the schema version).
 */
import type { DatabaseSync, SQLInputValue, SQLOutputValue, StatementSync } from 'node:sqlite'
import { AUDIT_HASH_BYTES, type StatusReport, type Targets } from '../protocol/index.ts'
import {
  type AuditRecord,
  type MachineRecord,
  type ManifestRecord,
  type NarInfoRecord,
  type NewManifest,
  type StatusRecord,
  StoreSchemaError,
} from './store.ts'

/** A row as node:sqlite returns it: column name to value. */
export type Row = Record<string, SQLOutputValue>

/** Prepares every statement of `sql` once, under the same keys. */
export function prepareStatements<K extends string>(
  db: DatabaseSync,
  sql: Readonly<Record<K, string>>,
): Record<K, StatementSync> {
  const entries = Object.entries(sql).map(([key, text]) => [key, db.prepare(text as string)])
  return Object.fromEntries(entries) as Record<K, StatementSync>
}

export function checkLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(`limit must be a non-negative integer, got ${limit}`)
  }
  return limit
}

export function mapRow<T>(row: Row | undefined, fn: (row: Row) => T): T | undefined {
  return row === undefined ? undefined : fn(row)
}

export function required(row: Row | undefined, table: string): Row {
  if (row === undefined) throw new StoreSchemaError(`a row just written to ${table} cannot be read back`)
  return row
}

function corrupt(key: string, expected: string, value: unknown): StoreSchemaError {
  return new StoreSchemaError(
    `column ${key} holds ${describeValue(value)}, expected ${expected}; the database is damaged`,
  )
}

/** What a value is, for error messages: its type, or its length for bytes. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`
  return typeof value
}

export function text(row: Row, key: string): string {
  const value = row[key]
  if (typeof value !== 'string') throw corrupt(key, 'text', value)
  return value
}

export function integer(row: Row, key: string): number {
  const value = row[key]
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw corrupt(key, 'an integer', value)
  return value
}

export function blob(row: Row, key: string): Uint8Array {
  const value = row[key]
  if (!(value instanceof Uint8Array)) throw corrupt(key, 'a blob', value)
  return value
}

export function nullable<T>(row: Row, key: string, read: (row: Row, key: string) => T): T | null {
  return row[key] === null ? null : read(row, key)
}

/**
 * JSON columns are written only by this store from values the protocol layer
 * already validated, so they are trusted on the way back instead of re-parsed
 * with a schema on every read.
 */
export function json<T>(row: Row, key: string): T {
  try {
    return JSON.parse(text(row, key)) as T
  } catch (err) {
    if (err instanceof StoreSchemaError) throw err
    throw corrupt(key, 'JSON text', row[key])
  }
}

export function toMachine(row: Row): MachineRecord {
  const path = row.path
  if (path !== null && path !== 'direct' && path !== 'relayed')
    throw corrupt('path', 'direct or relayed', path)
  const transport = row.transport
  if (transport !== null && transport !== 'tcp' && transport !== 'quic')
    throw corrupt('transport', 'tcp or quic', transport)
  return {
    name: text(row, 'name'),
    peerId: text(row, 'peer_id'),
    publicKey: text(row, 'public_key'),
    tags: json<string[]>(row, 'tags'),
    facts: json<Record<string, string>>(row, 'facts'),
    enrolledAt: integer(row, 'enrolled_at'),
    lastSeen: nullable(row, 'last_seen', integer),
    path,
    transport,
    agentVersion: nullable(row, 'agent_version', text),
  }
}

/** The values of the manifests table's INSERT (statementSql.insertManifest), in its column order. */
export function manifestRow(m: NewManifest, machines: readonly string[]): SQLInputValue[] {
  return [
    m.id,
    m.sequence,
    m.rolloutId,
    m.generation,
    JSON.stringify(m.targets),
    m.envelope,
    m.submittedBy,
    m.submittedAt,
    m.expiresAt,
    JSON.stringify(machines),
  ]
}

export function toManifest(row: Row): ManifestRecord {
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

export function toStatus(row: Row): StatusRecord {
  return {
    machine: text(row, 'machine'),
    seq: integer(row, 'seq'),
    report: json<StatusReport>(row, 'report'),
    envelope: blob(row, 'envelope'),
    receivedAt: integer(row, 'received_at'),
  }
}

export function toNarInfo(row: Row): NarInfoRecord {
  return {
    hash: text(row, 'hash'),
    storePath: text(row, 'store_path'),
    narinfo: text(row, 'narinfo'),
    narSha256: text(row, 'nar_sha256'),
    narSize: integer(row, 'nar_size'),
    references: json<string[]>(row, 'refs'),
    addedAt: integer(row, 'added_at'),
    touchedAt: integer(row, 'touched_at'),
  }
}

export function toAudit(row: Row): AuditRecord {
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
