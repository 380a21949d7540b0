/**
 * `fleetmesh store`: operations on a coordinator's store while no coordinator
 * needs to run. `migrate` brings a store's schema up to this build's version
 * (coordinators also do it when they start; this lets an operator do it first,
 * once). `copy` moves a fleet from its SQLite file to an empty PostgreSQL
 * database (pg-copy.ts), audit chain included.
 */
import { type CommandSpec, parseCommand, str, UsageError } from '../lib/index.ts'
import { copySqliteToPostgres } from './pg-copy.ts'
import { PG_SCHEMA_VERSION } from './pg-store.ts'
import { SCHEMA_VERSION } from './sqlite-store.ts'
import { describeStore, openStore, parseStoreSpec, STORE_SPEC_USAGE, StoreSpecError } from './store-open.ts'

export const STORE_COMMAND: CommandSpec = {
  name: 'store',
  summary:
    "Migrate a coordinator's store to this version's schema, or copy a fleet from SQLite to PostgreSQL.",
  usage:
    'fleetmesh store migrate --store <store> | fleetmesh store copy --from sqlite:<path> --to postgres://…',
  options: {
    store: { type: 'string', value: '<store>', description: `the store to migrate: ${STORE_SPEC_USAGE}` },
    from: {
      type: 'string',
      value: 'sqlite:<path>',
      description: 'copy: the SQLite file to copy the fleet from',
    },
    to: {
      type: 'string',
      value: '<url>',
      description: 'copy: the empty PostgreSQL database to copy the fleet into',
    },
  },
  examples: [
    'fleetmesh store migrate --store postgres://fleetmesh@db.internal/fleet',
    'fleetmesh store copy --from sqlite:/var/lib/fleetmesh-coordinator/fleet.db --to postgres://fleetmesh@db.internal/fleet',
  ],
  notes: [
    'Stop the coordinator before a copy; the copy reads one snapshot of the file and refuses a target that holds any data.',
    'After a copy, start the coordinator with --store <url>; the SQLite file is left as it was.',
  ],
}

/** The store a flag names, or a usage error naming the flag. */
function spec(value: string | undefined, flag: string) {
  if (value === undefined) throw new UsageError(`${flag} is required\nusage: ${STORE_COMMAND.usage}`)
  try {
    return parseStoreSpec(value, '')
  } catch (err) {
    if (err instanceof StoreSpecError) throw new UsageError(`${flag} must be ${STORE_SPEC_USAGE}`)
    throw err
  }
}

export async function storeCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, STORE_COMMAND)
  const [action, ...extra] = p.positionals
  if (extra.length > 0) throw new UsageError(`unexpected ${extra.join(' ')}\nusage: ${STORE_COMMAND.usage}`)
  if (action === 'migrate') {
    const target = spec(str(p, 'store'), '--store')
    // An existing store only: migrating a path that holds nothing is a typo, not a new fleet.
    const store = await openStore(str(p, 'store'), '', { create: false })
    await store.close()
    const version = target.kind === 'postgres' ? PG_SCHEMA_VERSION : SCHEMA_VERSION
    process.stdout.write(`${describeStore(target)} is at schema version ${version}\n`)
    return 0
  }
  if (action === 'copy') {
    const from = spec(str(p, 'from'), '--from')
    const to = spec(str(p, 'to'), '--to')
    if (from.kind !== 'sqlite' || to.kind !== 'postgres')
      throw new UsageError(
        'store copy goes from a SQLite file (--from sqlite:<path>) to PostgreSQL (--to postgres://…)',
      )
    const report = await copySqliteToPostgres(from.path, to.url)
    const counts = Object.entries(report.rows).map(([table, n]) => `${table} ${n}`)
    process.stdout.write(
      `copied ${from.path} to ${describeStore(to)}: ${counts.join(', ')}; audit log up to record ${report.auditHead}\n` +
        `start the coordinator with --store ${describeStore(to)} (verify with "fleetmesh audit --verify")\n`,
    )
    return 0
  }
  throw new UsageError(
    `${action === undefined ? 'name an action' : `unknown action '${action}'`}: migrate or copy\nusage: ${STORE_COMMAND.usage}`,
  )
}
