/**
 * Machines' sightings (FleetStore.touchMachine: last seen, path, transport,
 * agent version) in the SQLite store. Every connecting agent records one, and a
 * commit of its own was an fsync on the main thread (5–7% of it in a reconnect
 * storm of 1,000 agents), so the sightings of one event-loop turn commit
 * together (lib/tick-batch.ts); each caller still learns its own outcome.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { TickBatch } from '../lib/index.ts'
import { unknownMachine } from './sqlite-rollouts.ts'
import { prepareStatements } from './sqlite-rows.ts'
import type { TouchInput } from './store.ts'

const statementSql = {
  touchMachine:
    'UPDATE machines SET last_seen = ?, path = ?, transport = ?, agent_version = coalesce(?, agent_version) WHERE name = ?',
} as const

export class SqliteSightings {
  readonly #s: Record<keyof typeof statementSql, StatementSync>
  readonly #batch: TickBatch<{ name: string; input: TouchInput }, undefined>

  /** `write` runs its function in one transaction (the store's BEGIN IMMEDIATE … COMMIT). */
  constructor(db: DatabaseSync, write: <T>(fn: () => T) => T) {
    this.#s = prepareStatements(db, statementSql)
    this.#batch = new TickBatch<{ name: string; input: TouchInput }, undefined>((sightings) =>
      write(() =>
        sightings.map(({ name, input: { lastSeen, path, transport, agentVersion } }) => {
          const result = this.#s.touchMachine.run(
            lastSeen,
            path,
            transport ?? null,
            agentVersion ?? null,
            name,
          )
          return Number(result.changes) === 0 ? unknownMachine(name) : undefined
        }),
      ),
    )
  }

  /** Resolves once the sighting is committed, with this turn's others; an unknown machine is refused alone. */
  touch(name: string, input: TouchInput): Promise<void> {
    return this.#batch.add({ name, input })
  }
}
