/**
 * The signed revocation list and the signed tag records in the PostgreSQL
 * store: the counterparts of sqlite-revocations.ts and sqlite-tags.ts. An
 * append to the revocation list holds the 'revocations' advisory lock, so of
 * two coordinators extending the same head one wins and the other gets
 * 'revocation-conflict'; tag changes hold the 'fleet' lock, as enrollment does.
 */
import {
  type ListState,
  MachineTagsRefusedError,
  type RevocationHead,
  type RevocationView,
  ZERO_HASH,
} from '../protocol/index.ts'
import type { PgDb, Sql } from './pg-db.ts'
import { blob, checkLimit, integer, text } from './sqlite-rows.ts'
import type { MachineTagStore, StoredTagRecord, TagChange } from './sqlite-tags.ts'
import { type NewRevocation, type RevocationLog, StoreConflictError, type StoredRevocation } from './store.ts'

const SQL = {
  head: 'SELECT seq, hash FROM revocation_log ORDER BY seq DESC LIMIT 1',
  insert: 'INSERT INTO revocation_log (seq, hash, serial, at, envelope) VALUES ($1, $2, $3, $4, $5)',
  revoke:
    'INSERT INTO revocations (serial, reason, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (serial) DO NOTHING',
  list: 'SELECT * FROM revocation_log WHERE seq > $1 ORDER BY seq LIMIT $2',
  summary: 'SELECT seq, hash, serial, at FROM revocation_log ORDER BY seq',

  getTags: 'SELECT machine, version, envelope FROM machine_tags WHERE machine = $1',
  versions: 'SELECT machine, version FROM machine_tags',
  machineTags: 'SELECT tags FROM machines WHERE name = $1',
  setTags: 'UPDATE machines SET tags = $1 WHERE name = $2',
  putTags: `INSERT INTO machine_tags (machine, version, envelope, signed_by, at) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (machine) DO UPDATE SET version = excluded.version, envelope = excluded.envelope,
      signed_by = excluded.signed_by, at = excluded.at`,
  dropTags: 'DELETE FROM machine_tags WHERE machine = $1',
} as const

export class PgRevocations implements RevocationLog {
  readonly #db: PgDb

  constructor(db: PgDb) {
    this.#db = db
  }

  append(entry: NewRevocation): Promise<void> {
    return this.#db.transaction(['revocations'], async (tx) => {
      const { seq, hash } = await head(tx)
      if (entry.seq !== seq + 1 || entry.prev !== hash)
        throw new StoreConflictError(
          'revocation-conflict',
          `revocation entry ${entry.seq} does not extend the list, which now ends at entry ${seq}; ` +
            'another revocation was added first: sign it again on top of the new head',
        )
      await tx.run(SQL.insert, [entry.seq, entry.hash, entry.serial, entry.at, entry.envelope])
      await tx.run(SQL.revoke, [entry.serial, entry.reason, entry.at])
    })
  }

  head(): Promise<RevocationHead> {
    return head(this.#db.sql)
  }

  async list(after: number, limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<StoredRevocation[]> {
    const out: StoredRevocation[] = []
    let bytes = 0
    for (const row of await this.#db.sql.rows(SQL.list, [after, checkLimit(limit)])) {
      const envelope = blob(row, 'envelope')
      if (out.length > 0 && bytes + envelope.byteLength > maxBytes) break
      out.push({
        seq: integer(row, 'seq'),
        hash: text(row, 'hash'),
        serial: text(row, 'serial'),
        at: integer(row, 'at'),
        envelope,
      })
      bytes += envelope.byteLength
    }
    return out
  }

  async state(): Promise<RevocationView & ListState> {
    const hashes = new Map<number, string>([[0, ZERO_HASH]])
    const revoked = new Set<string>()
    let last = { seq: 0, hash: ZERO_HASH }
    let lastAt = 0
    for (const row of await this.#db.sql.rows(SQL.summary)) {
      last = { seq: integer(row, 'seq'), hash: text(row, 'hash') }
      hashes.set(last.seq, last.hash)
      revoked.add(text(row, 'serial'))
      lastAt = integer(row, 'at')
    }
    return { head: last, hashAt: (seq) => hashes.get(seq), revoked, lastAt }
  }
}

async function head(sql: Sql): Promise<RevocationHead> {
  const [row] = await sql.rows(SQL.head)
  return row === undefined
    ? { seq: 0, hash: ZERO_HASH }
    : { seq: integer(row, 'seq'), hash: text(row, 'hash') }
}

const same = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((t) => b.includes(t))

export class PgMachineTags implements MachineTagStore {
  readonly #db: PgDb

  constructor(db: PgDb) {
    this.#db = db
  }

  async get(machine: string): Promise<StoredTagRecord | undefined> {
    const [row] = await this.#db.sql.rows(SQL.getTags, [machine])
    return row === undefined
      ? undefined
      : { machine: text(row, 'machine'), version: integer(row, 'version'), envelope: blob(row, 'envelope') }
  }

  async versions(): Promise<Map<string, number>> {
    const rows = await this.#db.sql.rows(SQL.versions)
    return new Map(rows.map((row) => [text(row, 'machine'), integer(row, 'version')]))
  }

  apply(changes: readonly TagChange[]): Promise<void> {
    return this.#db.transaction(['fleet'], (tx) => applyTagsInTransaction(tx, changes))
  }
}

/** machineTags.apply's work, inside a transaction holding the 'fleet' lock (also the store's bundle). */
export async function applyTagsInTransaction(tx: Sql, changes: readonly TagChange[]): Promise<void> {
  for (const c of changes) {
    const [row] = await tx.rows(SQL.machineTags, [c.machine])
    const [stored] = await tx.rows(SQL.getTags, [c.machine])
    const version = stored === undefined ? 0 : integer(stored, 'version')
    if (row === undefined || !same(JSON.parse(text(row, 'tags')) as string[], c.from) || version >= c.version)
      throw new MachineTagsRefusedError(
        'stale-version',
        `the tags of ${c.machine} changed while this request was checked (now version ${version}); ` +
          'nothing was changed: run plan and apply again',
      )
    await tx.run(SQL.setTags, [JSON.stringify(c.tags), c.machine])
    await tx.run(SQL.putTags, [c.machine, c.version, c.envelope, c.signedBy, c.at])
  }
}

/** Inside the enrollment transaction: the machine enrolled again, its token's tags are the newer statement. */
export async function dropTagsInTransaction(tx: Sql, machine: string): Promise<void> {
  await tx.run(SQL.dropTags, [machine])
}
