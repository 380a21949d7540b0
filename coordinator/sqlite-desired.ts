/**
 * The desired manifests of many machines in one read (FleetStore.getDesiredMany),
 * for the fan-out of a submit or a rollout wave to every connected agent.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { mapRow, prepareStatements, text, toManifest } from './sqlite-rows.ts'
import type { ManifestRecord } from './store.ts'

const statementSql = {
  desiredIds: 'SELECT machine, manifest_id FROM desired WHERE machine IN (SELECT value FROM json_each(?))',
  getManifest: 'SELECT * FROM manifests WHERE id = ?',
} as const

export class SqliteDesired {
  readonly #s: Record<keyof typeof statementSql, StatementSync>

  constructor(db: DatabaseSync) {
    this.#s = prepareStatements(db, statementSql)
  }

  /** Machines without a desired manifest are absent; machines sharing one share its record. */
  many(machines: readonly string[]): Map<string, ManifestRecord> {
    // Each manifest decoded once: its list of machines is as long as the fan-out itself.
    const manifests = new Map<string, ManifestRecord | undefined>()
    const desired = new Map<string, ManifestRecord>()
    for (const row of this.#s.desiredIds.all(JSON.stringify(machines))) {
      const id = text(row, 'manifest_id')
      if (!manifests.has(id)) manifests.set(id, mapRow(this.#s.getManifest.get(id), toManifest))
      const record = manifests.get(id)
      if (record !== undefined) desired.set(text(row, 'machine'), record)
    }
    return desired
  }
}
