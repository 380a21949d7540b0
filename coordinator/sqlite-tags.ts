/**
 * Signed tag records in the embedded store (table machine_tags): the latest one
 * accepted per machine, with the tags it gave written into machines.tags in the
 * same transaction, so scope checks, targeting and what agents are sent agree.
 * A re-enrollment drops the machine's record: the token it enrolled with is the
 * newer statement of its tags, and its agent starts again from version 0.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { MachineTagsRefusedError } from '../protocol/index.ts'
import type { WriteTransaction } from './sqlite-narinfos.ts'
import { blob, integer, prepareStatements, text } from './sqlite-rows.ts'

/** One accepted record, to store. */
export interface TagChange {
  machine: string
  /** The tags the record was checked against: the change is refused if they changed since. */
  from: readonly string[]
  tags: readonly string[]
  version: number
  envelope: Uint8Array
  /** The signer's public key */
  signedBy: string
  at: number
}

export interface StoredTagRecord {
  machine: string
  version: number
  envelope: Uint8Array
}

/** The tag records of FleetStore (`machineTags`). */
export interface MachineTagStore {
  get(machine: string): Promise<StoredTagRecord | undefined>
  /** The last accepted version of every machine that has a record. */
  versions(): Promise<Map<string, number>>
  /**
   * Stores every change or none: a machine whose tags are no longer `from`, or
   * whose stored version is not below the change's, fails the whole batch with
   * MachineTagsRefusedError "stale-version" (another change came first).
   */
  apply(changes: readonly TagChange[]): Promise<void>
}

const statementSql = {
  get: 'SELECT machine, version, envelope FROM machine_tags WHERE machine = ?',
  versions: 'SELECT machine, version FROM machine_tags',
  machineTags: 'SELECT tags FROM machines WHERE name = ?',
  setTags: 'UPDATE machines SET tags = ? WHERE name = ?',
  put: `INSERT INTO machine_tags (machine, version, envelope, signed_by, at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (machine) DO UPDATE SET version = excluded.version, envelope = excluded.envelope,
      signed_by = excluded.signed_by, at = excluded.at`,
  drop: 'DELETE FROM machine_tags WHERE machine = ?',
} as const

const same = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((t) => b.includes(t))

export class SqliteMachineTags implements MachineTagStore {
  readonly #s: Record<keyof typeof statementSql, StatementSync>
  readonly #write: WriteTransaction

  constructor(db: DatabaseSync, write: WriteTransaction) {
    this.#s = prepareStatements(db, statementSql)
    this.#write = write
  }

  async get(machine: string): Promise<StoredTagRecord | undefined> {
    const row = this.#s.get.get(machine)
    return row === undefined
      ? undefined
      : { machine: text(row, 'machine'), version: integer(row, 'version'), envelope: blob(row, 'envelope') }
  }

  async versions(): Promise<Map<string, number>> {
    return new Map(this.#s.versions.all().map((row) => [text(row, 'machine'), integer(row, 'version')]))
  }

  async apply(changes: readonly TagChange[]): Promise<void> {
    this.#write(() => this.applyInTransaction(changes))
  }

  /** apply's work, inside a write transaction the caller holds (the store's bundle). */
  applyInTransaction(changes: readonly TagChange[]): void {
    for (const c of changes) {
      const row = this.#s.machineTags.get(c.machine)
      const stored = this.#s.get.get(c.machine)
      const version = stored === undefined ? 0 : integer(stored, 'version')
      if (
        row === undefined ||
        !same(JSON.parse(text(row, 'tags')) as string[], c.from) ||
        version >= c.version
      )
        throw new MachineTagsRefusedError(
          'stale-version',
          `the tags of ${c.machine} changed while this request was checked (now version ${version}); ` +
            'nothing was changed: run plan and apply again',
        )
      this.#s.setTags.run(JSON.stringify(c.tags), c.machine)
      this.#s.put.run(c.machine, c.version, c.envelope, c.signedBy, c.at)
    }
  }

  /** Inside the store's enrollment transaction: the machine enrolled again. */
  dropInTransaction(machine: string): void {
    this.#s.drop.run(machine)
  }
}
