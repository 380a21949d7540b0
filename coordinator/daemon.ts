/**
 * The coordinator daemon: loads its identity and fleet configuration from the
 * state directory, opens the SQLite store, starts the libp2p host and serves the
 * enroll, control, admin and blob protocols.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadIdentity, PublicKey } from '../keys/identity.ts'
import { describeIssues } from '../keys/schema.ts'
import { COORDINATOR_CONFIG_FILE, coordinatorConfigSchema, IDENTITY_FILE } from '../protocol/fleet-config.ts'
import { FrameErrorCounters, handleFramed } from '../protocol/framing.ts'
import { createHost, type FleetHost, type RelayLimits } from '../protocol/host.ts'
import { PROTOCOLS } from '../protocol/ids.ts'
import { MAX_ENVELOPE_BYTES } from '../protocol/messages.ts'
import { AdminRpc } from './admin-rpc.ts'
import { signAuditHash } from './audit.ts'
import { BLOB_CHUNK_BYTES, blobHandler } from './blob-rpc.ts'
import { BlobStore } from './blobs.ts'
import { ControlService } from './control.ts'
import { enrollmentHandler } from './enrollment.ts'
import { FleetEvents } from './events.ts'
import { openSqliteStore } from './sqlite-store.ts'
import type { FleetStore } from './store.ts'

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export interface CoordinatorOptions {
  stateDir: string
  listen?: string[]
  announce?: string[]
  bootstrap?: string[]
  relay?: RelayLimits
  reserveOn?: string[]
  /** An agent silent for this long is dropped (it pings every ~10 s). */
  idleTimeoutMs?: number
  log?: (msg: string) => void
}

export interface RunningCoordinator {
  host: FleetHost
  store: FleetStore
  events: FleetEvents
  control: ControlService
  counters: FrameErrorCounters
  fleetId: string
  stop(): Promise<void>
}

export async function startCoordinator(options: CoordinatorOptions): Promise<RunningCoordinator> {
  const log = options.log ?? (() => {})
  const configPath = join(options.stateDir, COORDINATOR_CONFIG_FILE)
  let raw: string
  try {
    raw = await readFile(configPath, 'utf8')
  } catch {
    throw new ConfigError(
      `${configPath} is missing; create the state directory with "fleetmesh init --coordinator-state ${options.stateDir} …"`,
    )
  }
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch {
    throw new ConfigError(`${configPath} is not valid JSON`)
  }
  const parsed = coordinatorConfigSchema.safeParse(json)
  if (!parsed.success) throw new ConfigError(`${configPath} is invalid: ${describeIssues(parsed.error)}`)
  const config = parsed.data
  const key = await loadIdentity(join(options.stateDir, IDENTITY_FILE))
  const fleetRoot = PublicKey.parse(config.fleetRoot)

  const store = await openSqliteStore(join(options.stateDir, 'fleet.db'))
  await store.initFleet(config.fleetId, config.fleetRoot)
  const blobs = new BlobStore(join(options.stateDir, 'blobs'))
  await blobs.init()
  const events = new FleetEvents()
  const counters = new FrameErrorCounters()
  const control = new ControlService({ store, events, idleTimeoutMs: options.idleTimeoutMs ?? 45_000, log })
  const admin = new AdminRpc({ store, events, control, blobs, key, fleetId: config.fleetId, fleetRoot, log })

  let host: FleetHost
  try {
    host = await createHost({
      role: 'coordinator',
      privateKey: key.toLibp2p(),
      ...(options.listen ? { listen: options.listen } : {}),
      ...(options.announce ? { announce: options.announce } : {}),
      ...(options.bootstrap ? { bootstrap: options.bootstrap } : {}),
      ...(options.relay ? { relay: options.relay } : {}),
      ...(options.reserveOn ? { reserveOn: options.reserveOn } : {}),
    })
  } catch (err) {
    await store.close()
    throw err
  }
  const framed = { counters, maxFrameBytes: MAX_ENVELOPE_BYTES + 4096 }
  await handleFramed(
    host,
    PROTOCOLS.enroll,
    enrollmentHandler({
      store,
      events,
      fleetId: config.fleetId,
      fleetRoot,
      coordinatorPeerId: host.peerId.toString(),
      sign: signAuditHash(key),
      log,
    }),
    framed,
  )
  await handleFramed(host, PROTOCOLS.control, control.handle, { ...framed, maxInboundStreams: 4 })
  await handleFramed(host, PROTOCOLS.admin, admin.handle, {
    ...framed,
    maxFrameBytes: Math.max(framed.maxFrameBytes, BLOB_CHUNK_BYTES),
  })
  await handleFramed(host, PROTOCOLS.blob, blobHandler(store, blobs), {
    ...framed,
    maxFrameBytes: BLOB_CHUNK_BYTES,
  })

  return {
    host,
    store,
    events,
    control,
    counters,
    fleetId: config.fleetId,
    async stop() {
      await host.stop()
      await store.close()
    },
  }
}
