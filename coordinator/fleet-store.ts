/**
 * Opening a coordinator's fleet store at start-up, and refusing damage: only a
 * state directory `fleetmesh init` marked as new (NEW_FLEET_FILE) may start on
 * an empty store; a store that holds no fleet, another fleet, or damaged pages
 * is a DamagedStateError that says how to restore it, for a SQLite file in the
 * state directory and for a PostgreSQL database (which several coordinators
 * may share) alike.
 */
import { unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { CodedError, fileSize, fsyncDir } from '../lib/index.ts'
import {
  COORDINATOR_CONFIG_FILE,
  type CoordinatorConfig,
  IDENTITY_FILE,
  NEW_FLEET_FILE,
} from '../protocol/index.ts'
import { storeFileError } from './sqlite-schema.ts'
import { StoreFileError, type StoreFileErrorCode } from './sqlite-store.ts'
import type { FleetStore } from './store.ts'
import { describeStore, openStore, parseStoreSpec, type StoreSpec } from './store-open.ts'

/**
 * The state directory holds an identity but its database is missing, empty,
 * unusable or another fleet's: damage to restore from a backup, never a reason
 * to start an empty fleet (that would lock every machine out and make used
 * enrollment tokens work again). The message says how to restore.
 */
export class DamagedStateError extends CodedError<StoreFileErrorCode | 'no-fleet' | 'fleet-mismatch'> {
  override name = 'DamagedStateError'
}

/** The store's file in the state directory. */
export const FLEET_DB_FILE = 'fleet.db'

/**
 * Opens the fleet's store (`storeSpec`, default FLEET_DB_FILE in the state
 * directory). The marker goes once the store holds the fleet. Anything else
 * that is not this fleet's store is a DamagedStateError, and the store is left
 * as it was found. `origin` names this coordinator in a shared store.
 */
export async function openFleetStore(
  stateDir: string,
  config: CoordinatorConfig,
  storeSpec?: string,
  origin?: string,
): Promise<FleetStore> {
  const path = join(stateDir, FLEET_DB_FILE)
  const spec = parseStoreSpec(storeSpec, path)
  const where = describeStore(spec)
  const marker = join(stateDir, NEW_FLEET_FILE)
  const isNew = (await fileSize(marker)) !== undefined
  let store: FleetStore
  try {
    store = await openStore(storeSpec, path, { create: isNew, ...(origin ? { origin } : {}) })
  } catch (err) {
    if (!(err instanceof StoreFileError) || err.code === 'unusable') throw err
    throw damaged(err.code, stateDir, spec, err.message, err)
  }
  try {
    const stored = await store.getFleet()
    if (stored === undefined) {
      if (!isNew) throw damaged('no-fleet', stateDir, spec, `${where} holds no fleet`)
      await store.initFleet(config.fleetId, config.fleetRoot)
    } else if (stored.fleetId !== config.fleetId || stored.fleetRoot !== config.fleetRoot) {
      const configPath = join(stateDir, COORDINATOR_CONFIG_FILE)
      throw damaged(
        'fleet-mismatch',
        stateDir,
        spec,
        `${where} belongs to fleet "${stored.fleetId}" (root ${stored.fleetRoot}), but ${configPath} is for ` +
          `fleet "${config.fleetId}" (root ${config.fleetRoot}); one of them comes from another fleet`,
      )
    }
  } catch (err) {
    await store.close()
    if (err instanceof DamagedStateError || spec.kind === 'postgres') throw err
    // the first reads of the fleet's rows can still meet a damaged page
    const named = storeFileError(path, err)
    throw named instanceof StoreFileError && named.code !== 'unusable'
      ? damaged(named.code, stateDir, spec, named.message, named)
      : named
  }
  if (isNew) {
    await unlink(marker).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
    await fsyncDir(stateDir)
  }
  return store
}

function damaged(
  code: DamagedStateError['code'],
  stateDir: string,
  spec: StoreSpec,
  what: string,
  cause?: unknown,
): DamagedStateError {
  const restore =
    spec.kind === 'postgres'
      ? `Check that --store names this fleet's database (${describeStore(spec)}); if it does, restore that ` +
        'database from a backup (pg_restore) with every coordinator of the fleet stopped, or copy the fleet into ' +
        'it with "fleetmesh store copy". '
      : `Restore ${FLEET_DB_FILE} from a backup of this directory: stop anything using it, remove ` +
        `${spec.path}-wal and ${spec.path}-shm if present, and copy the backup's ${FLEET_DB_FILE} to ${spec.path}. `
  return new DamagedStateError(
    code,
    `${what}. ${stateDir} holds this coordinator's identity (${IDENTITY_FILE}) and is not a new fleet, so the ` +
      'coordinator will not start on an empty fleet in its place, which would lock out every enrolled machine ' +
      `and accept used enrollment tokens again. ${restore}` +
      '"fleetmesh init" only creates a new fleet; it cannot repair this one.',
    cause === undefined ? undefined : { cause },
  )
}
