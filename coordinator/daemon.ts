/**
 * The coordinator daemon: loads its identity and fleet configuration from the
 * state directory, opens its store (fleet-store.ts: SQLite, or PostgreSQL shared
 * with the fleet's other coordinators, cluster.ts), starts the libp2p host and
 * serves the enroll, control, admin, blob and Nix cache protocols; collects the
 * Nix cache hourly (nix-retention.ts).
 */
import { join } from 'node:path'
import { identifyPush } from '@libp2p/identify'
import { loadIdentity, PublicKey } from '../keys/index.ts'
import { acquireDirLock, type DirLock, PersistError, readJson } from '../lib/index.ts'
import {
  checkAddresses,
  createHost,
  type FleetHost,
  holePunchDetails,
  keepRuntimeFile,
  pruneSupersededConnections,
  type RelayLimits,
  type ReservationEvent,
  ReservationKeeper,
  repairReservationExpiry,
  snapshotHost,
  startObserver,
  stopHost,
  transportAccess,
} from '../net/index.ts'
import {
  BLOB_CHUNK_BYTES,
  COORDINATOR_CONFIG_FILE,
  type CoordinatorConfig,
  coordinatorConfigSchema,
  FrameErrorCounters,
  handleFramed,
  IDENTITY_FILE,
  MAX_ENVELOPE_BYTES,
  MAX_NIX_FRAME_BYTES,
  MAX_STANDBY_FRAME_BYTES,
  PROTOCOLS,
} from '../protocol/index.ts'
import { AdminRpc } from './admin-rpc.ts'
import { signAuditHash } from './audit.ts'
import { blobHandler } from './blob-rpc.ts'
import { checkSharedBlobs } from './blob-share.ts'
import { BlobStore } from './blobs.ts'
import { ClusterMember } from './cluster.ts'
import { CoordinatorRoster } from './cluster-roster.ts'
import { ControlService } from './control.ts'
import { enrollmentHandler } from './enrollment.ts'
import { FleetEvents } from './events.ts'
import { openFleetStore } from './fleet-store.ts'
import { startHousekeeping } from './housekeeping.ts'
import { listenFromConfig } from './listen-addrs.ts'
import { coordinatorDialScope, fleetHolePunch, punchWhenOnline } from './mesh-policy.ts'
import { NixCache } from './nix-cache.ts'
import { nixCacheHandler } from './nix-cache-rpc.ts'
import { COLLECT_INTERVAL_MS, NixRetention } from './nix-retention.ts'
import { RolloutEngine } from './rollout-engine.ts'
import { standbyHandler } from './standby.ts'
import type { FleetStore } from './store.ts'
import type { UploadLimits } from './upload-quota.ts'
import { verifyPool } from './verify-pool.ts'

/** The state directory has no usable coordinator.json; the message says how to create one. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

export { DamagedStateError, FLEET_DB_FILE } from './fleet-store.ts'

export interface CoordinatorOptions {
  stateDir: string
  listen?: string[]
  announce?: string[]
  bootstrap?: string[]
  relay?: RelayLimits
  /**
   * Relays (multiaddrs ending in /p2p/<relay id>) to hold a reservation on, so
   * that agents reach this coordinator as `<relay>/p2p-circuit/p2p/<us>` when it
   * sits behind NAT. Reservations are made after start-up and re-made whenever
   * lost; see reservations.ts.
   */
  reserveOn?: string[]
  /** Public observers (`ip:port`) for hole punching when this coordinator is behind NAT. */
  observers?: string[]
  /** Longest NAT keepalive interval of the punch port (hole punching's reprobeIntervalMs) */
  natKeepaliveMaxMs?: number
  /** Serve the NAT observer on these TCP ports (a public coordinator helps agents detect their NAT). */
  observerPorts?: number[]
  /** How often to probe each relay connection (default 10 s) */
  reserveKeepaliveMs?: number
  onReservation?: (event: ReservationEvent) => void
  /** An agent silent for this long is dropped (it pings every ~10 s). */
  idleTimeoutMs?: number
  /** New inbound connections per second accepted from one IP (default 500; net/accept-limit.ts). */
  maxAcceptsPerIp?: number
  /** The Nix cache keeps the closures of this many newest manifests, besides every desired one (default 20). */
  nixKeepManifests?: number
  /** Nix cache paths pushed or asked about within this long are never collected (default 24 h). */
  nixCacheGraceMs?: number
  /** Bounds on admin blob uploads (timeouts, pending-upload caps); defaults in upload-quota.ts. */
  uploads?: Partial<UploadLimits>
  /** --store: a postgres:// URL, or sqlite:<path>; default the SQLite file in the state directory (store-open.ts). */
  store?: string
  /** --blobs: shared by every coordinator of a fleet on PostgreSQL; default `<state>/blobs`. */
  blobsDir?: string
  log?: (msg: string) => void
}

export interface RunningCoordinator {
  host: FleetHost
  store: FleetStore
  events: FleetEvents
  control: ControlService
  counters: FrameErrorCounters
  nixCache: NixCache
  /** Collects on its own hourly; tests call collect() with their own clock. */
  nixRetention: NixRetention
  fleetId: string
  /**
   * Where the host listens when `listen` was not given: from coordinator.json
   * (see listen-addrs.ts), with a note for every address changed or skipped.
   */
  listenNotes: string[]
  /** Present when `reserveOn` named relays */
  reservations: ReservationKeeper | undefined
  stop(): Promise<void>
}

export async function startCoordinator(options: CoordinatorOptions): Promise<RunningCoordinator> {
  // Before the lock and the host: a bad address fails at once, naming its flag.
  checkAddresses(options.listen ?? [], '--listen', 'listen')
  checkAddresses(options.announce ?? [], '--announce')
  checkAddresses(options.bootstrap ?? [], '--bootstrap', 'peer')
  checkAddresses(options.reserveOn ?? [], '--reserve-on', 'peer')
  const config = await loadConfig(options.stateDir)
  const lock = await acquireDirLock(options.stateDir, 'fleetmesh coordinator')
  try {
    return await startLocked(options, config, lock)
  } catch (err) {
    await lock.release()
    throw err
  }
}

async function startLocked(
  options: CoordinatorOptions,
  config: CoordinatorConfig,
  lock: DirLock,
): Promise<RunningCoordinator> {
  const log = options.log ?? (() => {})
  const key = await loadIdentity(join(options.stateDir, IDENTITY_FILE))
  const fleetRoot = PublicKey.parse(config.fleetRoot)
  // --listen wins; else where init said agents would dial (old state directories: the host's default)
  const recorded = (i: number) => `${join(options.stateDir, COORDINATOR_CONFIG_FILE)} listen[${i}]`
  const plan = options.listen
    ? { listen: options.listen, notes: [] }
    : listenFromConfig(checkAddresses(config.listen ?? [], recorded))

  // the report verifiers load on their own threads meanwhile, and are ready before anyone can connect
  const verifiers = verifyPool.warm()
  const store = await openFleetStore(options.stateDir, config, options.store, key.toPeerId().toString())
  const blobs = new BlobStore(options.blobsDir ?? join(options.stateDir, 'blobs'), {
    ...(options.uploads ? { uploads: options.uploads } : {}),
  })
  await blobs.init()
  const events = new FleetEvents()
  const counters = new FrameErrorCounters()
  const control = new ControlService({
    store,
    events,
    idleTimeoutMs: options.idleTimeoutMs ?? 45_000,
    log,
    fleet: { fleetRoot, fleetId: config.fleetId },
    coordinatorList: () => roster.envelope,
  })
  const nixCache = new NixCache(store, blobs)
  const nixRetention = new NixRetention({
    store,
    blobs,
    ...(options.nixKeepManifests !== undefined ? { keepManifests: options.nixKeepManifests } : {}),
    ...(options.nixCacheGraceMs !== undefined ? { graceMs: options.nixCacheGraceMs } : {}),
    log,
  })
  const rollouts = new RolloutEngine({
    store,
    events,
    push: (machines) => control.pushDesired(machines),
    online: (machine) => control.isOnline(machine),
    standby: store.cluster !== undefined, // several coordinators: only the lease holder's engine runs
    audit: async (action, detail) => {
      const actor = key.publicKey.toString()
      const entry = { at: Date.now(), peerId: host.peerId.toString(), actor, action, outcome: 'ok' as const }
      await store.appendAudit({ ...entry, detail, request: null }, signAuditHash(key))
    },
    log,
  })
  const self = { peerId: key.toPeerId().toString(), fleetRoot, fleetId: config.fleetId }
  const roster = new CoordinatorRoster(self.peerId, self, store.cluster)
  await roster.load(options.stateDir).catch((err) => store.close().then(() => Promise.reject(err)))
  const channel = store.cluster
  const cluster =
    channel && new ClusterMember({ channel, store, control, events, rollouts, roster, blobs, log })
  if (cluster) control.elsewhere = (machine) => cluster.onlineElsewhere(machine)
  const admin = new AdminRpc({
    store,
    events,
    control,
    blobs,
    nixCache,
    rollouts,
    key,
    fleetId: config.fleetId,
    fleetRoot,
    log,
  })

  const reserveOn = options.reserveOn ?? []
  const lastReservation = new Map<string, ReservationEvent>()
  const transports = transportAccess()
  let host: FleetHost
  let reservations: ReservationKeeper | undefined
  const dialScope = coordinatorDialScope(options.bootstrap ?? [], reserveOn)
  await verifiers
  try {
    // Not createHost's reserveOn: that makes start-up fail while the relay is
    // down and never re-reserves after a loss; the keeper does both.
    host = await createHost({
      role: 'coordinator',
      privateKey: key.toLibp2p(),
      ...(options.maxAcceptsPerIp !== undefined ? { maxAcceptsPerIp: options.maxAcceptsPerIp } : {}),
      ...(plan.listen.length > 0 ? { listen: plan.listen } : {}),
      ...(options.announce ? { announce: options.announce } : {}),
      ...(options.bootstrap ? { bootstrap: options.bootstrap } : {}),
      ...(options.relay ? { relay: options.relay } : {}),
      dialScope,
      extraServices: {
        // Without push, peers (the relay, and through it the DHT) only learn
        // our addresses when a connection opens: never the /p2p-circuit ones a
        // reservation adds afterwards. The relay must run it too, to receive.
        identifyPush: identifyPush(),
        ...(reserveOn.length > 0 ? { fleetmeshTransports: transports.service } : {}),
        ...(options.observers && options.observers.length > 0
          ? { holePunch: fleetHolePunch(options.observers, options.natKeepaliveMaxMs, store, dialScope) }
          : {}),
      },
    })
  } catch (err) {
    await store.close()
    throw err
  }
  try {
    if (reserveOn.length > 0) {
      reservations = new ReservationKeeper({
        host,
        transportManager: transports.get(),
        relays: reserveOn,
        ...(options.reserveKeepaliveMs ? { keepaliveMs: options.reserveKeepaliveMs } : {}),
        onEvent: (event) => {
          lastReservation.set(event.relay, event)
          options.onReservation?.(event)
        },
        log,
      })
    }
  } catch (err) {
    await stopHost(host)
    await store.close()
    throw err
  }
  punchWhenOnline(host, events, store)
  // this coordinator relays too, and agents reconnect to it after NAT resets
  const unprune = pruneSupersededConnections(host, { log })
  const unrepair = repairReservationExpiry(host)
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
      acceptsCoordinator: (peerId) => roster.accepts(peerId),
      sign: signAuditHash(key),
      log,
    }),
    framed,
  )
  await handleFramed(host, PROTOCOLS.control, control.handle, { ...framed, maxInboundStreams: 4 })
  await handleFramed(host, PROTOCOLS.standby, standbyHandler(store), {
    counters,
    maxFrameBytes: MAX_STANDBY_FRAME_BYTES,
    maxInboundStreams: 2,
  })
  await handleFramed(host, PROTOCOLS.admin, admin.handle, {
    ...framed,
    maxFrameBytes: Math.max(framed.maxFrameBytes, BLOB_CHUNK_BYTES),
    maxSendFrameBytes: 64 * 1024 * 1024, // answers (~300 B a machine) outgrow requests; admin/client.ts takes 64 MiB
  })
  await handleFramed(host, PROTOCOLS.blob, blobHandler(store, blobs), {
    ...framed,
    maxFrameBytes: BLOB_CHUNK_BYTES,
  })
  await handleFramed(host, PROTOCOLS.nix, nixCacheHandler(store, nixCache), {
    ...framed,
    maxFrameBytes: MAX_NIX_FRAME_BYTES,
  })
  const collection = nixRetention.every(COLLECT_INTERVAL_MS)
  const housekeeping = startHousekeeping({ store, log })
  // Resumes stored rollouts in waves where they were (also after a kill -9).
  await rollouts.start()
  cluster?.start() // after the engine: the lease may make it the one that moves rollouts on
  // several coordinators: a blob directory that is not the shared one is said now, not at an agent's failed update
  if (cluster) void checkSharedBlobs(store, blobs, log).catch((err: Error) => log(`blobs: ${err.message}`))
  reservations?.start()
  const observer =
    options.observerPorts && options.observerPorts.length > 0
      ? await startObserver({ host: '0.0.0.0', ports: options.observerPorts })
      : undefined
  const runtime = keepRuntimeFile(options.stateDir, () =>
    snapshotHost(host, 'coordinator', {
      fleetId: config.fleetId,
      agentsOnline: control.online.size,
      frameErrors: counters.snapshot(),
      reservations: Object.fromEntries(lastReservation),
      ...(observer ? { observerPorts: observer.ports } : {}),
      ...holePunchDetails(host, options.observers),
    }),
  )

  return {
    host,
    store,
    events,
    control,
    counters,
    nixCache,
    nixRetention,
    fleetId: config.fleetId,
    listenNotes: plan.notes,
    reservations,
    async stop() {
      unprune()
      unrepair()
      await control.recordLastSeen()
      await collection.stop()
      await housekeeping.stop()
      cluster?.stop()
      await rollouts.stop()
      blobs.close()
      await runtime.stop()
      await observer?.close()
      await reservations?.stop()
      await stopHost(host)
      await store.close()
      await lock.release()
    },
  }
}

/** Reads coordinator.json; any problem with it becomes a ConfigError that says how to create one. */
async function loadConfig(stateDir: string): Promise<CoordinatorConfig> {
  const path = join(stateDir, COORDINATOR_CONFIG_FILE)
  try {
    return await readJson(path, coordinatorConfigSchema)
  } catch (err) {
    if (!(err instanceof PersistError)) throw err
    const init = `"fleetmesh init --coordinator-state ${stateDir} …"`
    throw new ConfigError(
      err.code === 'missing'
        ? `${path} is missing; create the state directory with ${init}`
        : `${err.message} (a new state directory is made with ${init})`,
      { cause: err },
    )
  }
}
