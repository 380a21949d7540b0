/**
 * The relay daemon: a public host that lets peers behind NAT be reached
 * (circuit relay v2 server with operator-set limits), anchors the fleet's
 * private DHT (server mode) so agents can look a coordinator up by peer id,
 * and runs the NAT observers that hole punching needs. It holds no fleet state
 * and needs no fleet configuration, only its own identity:
 *
 *   <state>/identity.key   the relay's Ed25519 key (= its PeerId), created on first start
 *   <state>/runtime.json   what it currently sees of its network, for `fleetmesh doctor`
 *
 * It is a role like the coordinator and the agent, built only on lib/, keys/,
 * protocol/ and net/: everything a relay does beyond libp2p's relay server
 * (the reservation-expiry repair, pruning dead connections, the observers) is
 * in net/, where the coordinator, which relays too, uses the same code.
 *
 * @example
 *
 * ```ts
 * const relay = await startRelay({ stateDir: '/var/lib/fleetmesh-relay', listen: ['/ip4/0.0.0.0/tcp/4001'] })
 * console.log(relay.host.getMultiaddrs())
 * await relay.stop()
 * ```
 */
import { join } from 'node:path'
import { identifyPush } from '@libp2p/identify'
import { loadOrCreateIdentity } from '../keys/index.ts'
import { acquireDirLock, ensureDir } from '../lib/index.ts'
import {
  checkAddresses,
  createHost,
  type FleetHost,
  keepRuntimeFile,
  type Observer,
  pruneSupersededConnections,
  type RelayLimits,
  repairReservationExpiry,
  snapshotHost,
  startObserver,
  stopHost,
} from '../net/index.ts'
import { IDENTITY_FILE } from '../protocol/index.ts'

export interface RelayOptions {
  stateDir: string
  listen?: string[]
  announce?: string[]
  /** Other relays or coordinators to join the DHT through */
  bootstrap?: string[]
  relay?: RelayLimits
  /** New inbound connections per second accepted from one IP (default 500; net/accept-limit.ts). */
  maxAcceptsPerIp?: number
  /** TCP ports for the NAT observer (hole punching needs two to tell symmetric NATs apart). */
  observerPorts?: number[]
  log?: (msg: string) => void
}

export const DEFAULT_OBSERVER_PORTS = [4002, 4003]

export interface RunningRelay {
  host: FleetHost
  /** Peers currently holding a reservation */
  reservations(): number
  observerPorts: readonly number[]
  stop(): Promise<void>
}

/**
 * Starts the relay: loads or creates its identity, starts the host with the
 * relay server, the repairs from net/ and the observers, and keeps
 * runtime.json current. The caller owns the result and must `stop()` it.
 */
export async function startRelay(options: RelayOptions): Promise<RunningRelay> {
  // Before the lock and the host: a bad address fails at once, naming its flag.
  checkAddresses(options.listen ?? [], '--listen', 'listen')
  checkAddresses(options.announce ?? [], '--announce')
  checkAddresses(options.bootstrap ?? [], '--bootstrap', 'peer')
  await ensureDir(options.stateDir)
  const lock = await acquireDirLock(options.stateDir, 'fleetmesh relay')
  let host: FleetHost
  try {
    const key = await loadOrCreateIdentity(join(options.stateDir, IDENTITY_FILE))
    host = await createHost({
      role: 'relay',
      privateKey: key.toLibp2p(),
      listen: options.listen,
      announce: options.announce,
      bootstrap: options.bootstrap,
      relay: options.relay,
      ...(options.maxAcceptsPerIp !== undefined ? { maxAcceptsPerIp: options.maxAcceptsPerIp } : {}),
      // receives the address updates (new /p2p-circuit addresses) of the hosts
      // that reserve here, so DHT lookups through this relay return them
      extraServices: { identifyPush: identifyPush() },
    })
  } catch (err) {
    await lock.release()
    throw err
  }
  const unprune = pruneSupersededConnections(host, options.log ? { log: options.log } : {})
  const unrepair = repairReservationExpiry(host)
  let observer: Observer | undefined
  try {
    observer = options.observerPorts?.length
      ? await startObserver({ host: '0.0.0.0', ports: options.observerPorts })
      : undefined
  } catch (err) {
    await stopHost(host)
    await lock.release()
    throw err
  }
  const reservations = () => host.services.relay?.reservations.size ?? 0
  const runtime = keepRuntimeFile(options.stateDir, () =>
    snapshotHost(host, 'relay', { reservations: reservations(), observerPorts: observer?.ports ?? [] }),
  )
  return {
    host,
    reservations,
    observerPorts: observer?.ports ?? [],
    async stop() {
      unprune()
      unrepair()
      await runtime.stop()
      await observer?.close()
      await stopHost(host)
      await lock.release()
    },
  }
}
