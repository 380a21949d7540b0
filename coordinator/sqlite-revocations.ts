/**
 * The signed revocation list in the embedded store (table revocation_log): the
 * statements and methods behind FleetStore's `revocationLog`. An entry that is
 * appended also revokes its serial in the older `revocations` table, which the
 * coordinator checks admin requests and enrollment tokens against; rows there
 * without an entry here come from coordinators before the signed list, and stay
 * enforced by the coordinator alone (agents never hear of them).
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { type ListState, type RevocationHead, type RevocationView, ZERO_HASH } from '../protocol/index.ts'
import type { WriteTransaction } from './sqlite-narinfos.ts'
import { blob, checkLimit, integer, prepareStatements, text } from './sqlite-rows.ts'
import { type NewRevocation, type RevocationLog, StoreConflictError, type StoredRevocation } from './store.ts'

const statementSql = {
  head: 'SELECT seq, hash FROM revocation_log ORDER BY seq DESC LIMIT 1',
  insert: 'INSERT INTO revocation_log (seq, hash, serial, at, envelope) VALUES (?, ?, ?, ?, ?)',
  revoke:
    'INSERT INTO revocations (serial, reason, revoked_at) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING',
  list: 'SELECT * FROM revocation_log WHERE seq > ? ORDER BY seq LIMIT ?',
  summary: 'SELECT seq, hash, serial, at FROM revocation_log ORDER BY seq',
} as const

export class SqliteRevocations implements RevocationLog {
  readonly #s: Record<keyof typeof statementSql, StatementSync>
  readonly #write: WriteTransaction

  constructor(db: DatabaseSync, write: WriteTransaction) {
    this.#s = prepareStatements(db, statementSql)
    this.#write = write
  }

  async append(entry: NewRevocation): Promise<void> {
    this.#write(() => {
      const { seq, hash } = this.#head()
      if (entry.seq !== seq + 1 || entry.prev !== hash)
        throw new StoreConflictError(
          'revocation-conflict',
          `revocation entry ${entry.seq} does not extend the list, which now ends at entry ${seq}; ` +
            'another revocation was added first: sign it again on top of the new head',
        )
      this.#s.insert.run(entry.seq, entry.hash, entry.serial, entry.at, entry.envelope)
      this.#s.revoke.run(entry.serial, entry.reason, entry.at)
    })
  }

  async head(): Promise<RevocationHead> {
    return this.#head()
  }

  #head(): RevocationHead {
    const row = this.#s.head.get()
    return row === undefined
      ? { seq: 0, hash: ZERO_HASH }
      : { seq: integer(row, 'seq'), hash: text(row, 'hash') }
  }

  async list(after: number, limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<StoredRevocation[]> {
    const out: StoredRevocation[] = []
    let bytes = 0
    for (const row of this.#s.list.iterate(after, checkLimit(limit))) {
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
    let head = { seq: 0, hash: ZERO_HASH }
    let lastAt = 0
    for (const row of this.#s.summary.iterate()) {
      head = { seq: integer(row, 'seq'), hash: text(row, 'hash') }
      hashes.set(head.seq, head.hash)
      revoked.add(text(row, 'serial'))
      lastAt = integer(row, 'at')
    }
    return {
      head,
      hashAt: (seq) => hashes.get(seq),
      revoked,
      lastAt,
    }
  }
}
