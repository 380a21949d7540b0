/**
 * The Nix binary cache's narinfos in the PostgreSQL store: the counterpart of
 * sqlite-narinfos.ts. References stay a JSON array of basenames (text, decoded
 * by toNarInfo as SQLite's are), walked in SQL with a recursive query. Pushes
 * and retention take the 'nix' advisory lock, so retention's check and delete
 * see no push from another coordinator slip between them.
 */
import { STORE_DIR, storePathHash } from '../protocol/index.ts'
import type { PgDb } from './pg-db.ts'
import { checkLimit, text, toNarInfo } from './sqlite-rows.ts'
import type { NarInfoClosure, NarInfoCollection, NarInfoRecord, NewNarInfo } from './store.ts'

const SQL = {
  narInfoText: 'SELECT narinfo FROM nix_narinfos WHERE hash = $1',
  putNarInfo: `INSERT INTO nix_narinfos (hash, store_path, narinfo, nar_sha256, nar_size, refs, added_at, touched_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
    ON CONFLICT (hash) DO UPDATE SET store_path = excluded.store_path, narinfo = excluded.narinfo,
      nar_sha256 = excluded.nar_sha256, nar_size = excluded.nar_size, refs = excluded.refs,
      touched_at = GREATEST(nix_narinfos.touched_at, excluded.touched_at)`,
  touchNarInfos: 'UPDATE nix_narinfos SET touched_at = GREATEST(touched_at, $1) WHERE hash = ANY($2::text[])',
  getNarInfos: 'SELECT * FROM nix_narinfos WHERE hash = ANY($1::text[])',
  // UNION (not UNION ALL) visits each path once, so reference cycles end the walk; the
  // outer LIMIT stops the recursion, and ord keeps the walk's order (the root's first).
  narInfoClosure: `WITH RECURSIVE closure (hash, path) AS (
      VALUES ($1::text, $2::text)
      UNION
      SELECT substr(r.value, 1, 32), '${STORE_DIR}/' || r.value
        FROM closure c JOIN nix_narinfos n ON n.hash = c.hash, json_array_elements_text(n.refs::json) r
    ), walked AS (SELECT hash, path, row_number() OVER () AS ord FROM closure LIMIT $3)
    SELECT w.path AS closure_path, n.* FROM walked w LEFT JOIN nix_narinfos n ON n.hash = w.hash
    ORDER BY w.ord`,
  collectableNarInfos: `WITH RECURSIVE live (hash) AS (
      SELECT value FROM json_array_elements_text($1::json)
      UNION
      SELECT substr(r.value, 1, 32)
        FROM live l JOIN nix_narinfos n ON n.hash = l.hash, json_array_elements_text(n.refs::json) r
    )
    SELECT hash, store_path, nar_sha256 FROM nix_narinfos
      WHERE touched_at < $2 AND hash NOT IN (SELECT hash FROM live)`,
  deleteNarInfos: 'DELETE FROM nix_narinfos WHERE hash = ANY($1::text[])',
  narsInUse: 'SELECT DISTINCT nar_sha256 FROM nix_narinfos WHERE nar_sha256 = ANY($1::text[])',
} as const

export class PgNarInfos {
  readonly #db: PgDb

  constructor(db: PgDb) {
    this.#db = db
  }

  put(narinfos: readonly NewNarInfo[], at: number): Promise<('stored' | 'already-had')[]> {
    return this.#db.transaction(['nix'], async (tx) => {
      const out: ('stored' | 'already-had')[] = []
      for (const info of narinfos) {
        const hash = storePathHash(info.storePath)
        const [stored] = await tx.rows(SQL.narInfoText, [hash])
        if (stored !== undefined && text(stored, 'narinfo') === info.narinfo) {
          await tx.run(SQL.touchNarInfos, [at, [hash]])
          out.push('already-had')
          continue
        }
        const { storePath, narinfo, narSha256, narSize, references } = info
        await tx.run(SQL.putNarInfo, [
          hash,
          storePath,
          narinfo,
          narSha256,
          narSize,
          JSON.stringify(references),
          at,
        ])
        out.push('stored')
      }
      return out
    })
  }

  async get(hashes: readonly string[]): Promise<NarInfoRecord[]> {
    return (await this.#db.sql.rows(SQL.getNarInfos, [hashes])).map(toNarInfo)
  }

  async touch(hashes: readonly string[], at: number): Promise<void> {
    if (hashes.length > 0)
      await this.#db.transaction(['nix'], (tx) => tx.run(SQL.touchNarInfos, [at, hashes]))
  }

  async closure(storePath: string, maxPaths: number): Promise<NarInfoClosure> {
    const rows = await this.#db.sql.rows(SQL.narInfoClosure, [
      storePathHash(storePath),
      storePath,
      checkLimit(maxPaths) + 1,
    ])
    const held: NarInfoRecord[] = []
    const missing = new Set<string>()
    for (const row of rows.slice(0, maxPaths)) {
      if (row.hash === null) missing.add(text(row, 'closure_path'))
      else held.push(toNarInfo(row))
    }
    return { held, missing: [...missing].sort(), overflow: rows.length > maxPaths }
  }

  collect(roots: readonly string[], before: number): Promise<NarInfoCollection> {
    const rootHashes = JSON.stringify(roots.map(storePathHash))
    return this.#db.transaction(['nix'], async (tx) => {
      const rows = await tx.rows(SQL.collectableNarInfos, [rootHashes, before])
      const hashes = rows.map((row) => text(row, 'hash'))
      if (hashes.length > 0) await tx.run(SQL.deleteNarInfos, [hashes])
      const nars = [...new Set(rows.map((row) => text(row, 'nar_sha256')))]
      const inUse = new Set((await tx.rows(SQL.narsInUse, [nars])).map((row) => text(row, 'nar_sha256')))
      return {
        deleted: rows.map((row) => text(row, 'store_path')).sort(),
        orphanedNars: nars.filter((nar) => !inUse.has(nar)).sort(),
      }
    })
  }
}
