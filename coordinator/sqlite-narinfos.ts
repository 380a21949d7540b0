/**
 * The Nix binary cache's narinfos in the embedded store (table nix_narinfos):
 * the statements and methods behind FleetStore's narinfo methods, which
 * sqlite-store.ts delegates here. References are a JSON array of basenames,
 * walked in SQL with a recursive query, so a closure is one statement however
 * deep it is.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { STORE_DIR, storePathHash } from '../protocol/index.ts'
import { checkLimit, prepareStatements, text, toNarInfo } from './sqlite-rows.ts'
import type { NarInfoClosure, NarInfoCollection, NarInfoRecord, NewNarInfo } from './store.ts'

const statementSql = {
  narInfoText: 'SELECT narinfo FROM nix_narinfos WHERE hash = ?',
  putNarInfo: `INSERT INTO nix_narinfos (hash, store_path, narinfo, nar_sha256, nar_size, refs, added_at, touched_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (hash) DO UPDATE SET store_path = excluded.store_path, narinfo = excluded.narinfo,
      nar_sha256 = excluded.nar_sha256, nar_size = excluded.nar_size, refs = excluded.refs,
      touched_at = MAX(touched_at, excluded.touched_at)`,
  // Hash lists travel as one JSON array parameter, however long they are.
  touchNarInfos:
    'UPDATE nix_narinfos SET touched_at = MAX(touched_at, ?) WHERE hash IN (SELECT value FROM json_each(?))',
  getNarInfos: 'SELECT * FROM nix_narinfos WHERE hash IN (SELECT value FROM json_each(?))',
  // UNION (not UNION ALL) visits each path once, so reference cycles end the walk.
  narInfoClosure: `WITH RECURSIVE closure (hash, path) AS (
      VALUES (?, ?)
      UNION
      SELECT substr(r.value, 1, 32), '${STORE_DIR}/' || r.value
        FROM closure c JOIN nix_narinfos n ON n.hash = c.hash, json_each(n.refs) r
      LIMIT ?
    )
    SELECT c.path AS closure_path, n.* FROM closure c LEFT JOIN nix_narinfos n ON n.hash = c.hash`,
  collectableNarInfos: `WITH RECURSIVE live (hash) AS (
      SELECT value FROM json_each(?)
      UNION
      SELECT substr(r.value, 1, 32) FROM live l JOIN nix_narinfos n ON n.hash = l.hash, json_each(n.refs) r
    )
    SELECT hash, store_path, nar_sha256 FROM nix_narinfos
      WHERE touched_at < ? AND hash NOT IN (SELECT hash FROM live)`,
  deleteNarInfo: 'DELETE FROM nix_narinfos WHERE hash = ?',
  narInUse: 'SELECT 1 AS found FROM nix_narinfos WHERE nar_sha256 = ? LIMIT 1',
} as const

/** Runs its argument in one write transaction (the store's). */
export type WriteTransaction = <T>(fn: () => T) => T

export class SqliteNarInfos {
  readonly #s: Record<keyof typeof statementSql, StatementSync>
  readonly #write: WriteTransaction

  constructor(db: DatabaseSync, write: WriteTransaction) {
    this.#s = prepareStatements(db, statementSql)
    this.#write = write
  }

  async put(narinfos: readonly NewNarInfo[], at: number): Promise<('stored' | 'already-had')[]> {
    return this.#write(() =>
      narinfos.map((info) => {
        const hash = storePathHash(info.storePath)
        const stored = this.#s.narInfoText.get(hash)
        if (stored !== undefined && text(stored, 'narinfo') === info.narinfo) {
          this.#s.touchNarInfos.run(at, JSON.stringify([hash]))
          return 'already-had'
        }
        this.#s.putNarInfo.run(
          hash,
          info.storePath,
          info.narinfo,
          info.narSha256,
          info.narSize,
          JSON.stringify(info.references),
          at,
          at,
        )
        return 'stored'
      }),
    )
  }

  async get(hashes: readonly string[]): Promise<NarInfoRecord[]> {
    return this.#s.getNarInfos.all(JSON.stringify(hashes)).map(toNarInfo)
  }

  async touch(hashes: readonly string[], at: number): Promise<void> {
    if (hashes.length > 0) this.#s.touchNarInfos.run(at, JSON.stringify(hashes))
  }

  async closure(storePath: string, maxPaths: number): Promise<NarInfoClosure> {
    const rows = this.#s.narInfoClosure.all(storePathHash(storePath), storePath, checkLimit(maxPaths) + 1)
    const held: NarInfoRecord[] = []
    const missing = new Set<string>()
    for (const row of rows.slice(0, maxPaths)) {
      if (row.hash === null) missing.add(text(row, 'closure_path'))
      else held.push(toNarInfo(row))
    }
    return { held, missing: [...missing].sort(), overflow: rows.length > maxPaths }
  }

  async collect(roots: readonly string[], before: number): Promise<NarInfoCollection> {
    const rootHashes = JSON.stringify(roots.map(storePathHash))
    return this.#write(() => {
      const deleted: string[] = []
      const nars = new Set<string>()
      for (const row of this.#s.collectableNarInfos.all(rootHashes, before)) {
        this.#s.deleteNarInfo.run(text(row, 'hash'))
        deleted.push(text(row, 'store_path'))
        nars.add(text(row, 'nar_sha256'))
      }
      const orphanedNars = [...nars].filter((nar) => this.#s.narInUse.get(nar) === undefined)
      return { deleted: deleted.sort(), orphanedNars: orphanedNars.sort() }
    })
  }
}
