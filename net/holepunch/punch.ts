/**
 * One punch, once both sides agreed on it: simultaneous open towards the
 * peer's observed endpoint, the libp2p upgrade of the punched socket, and the
 * relayed connections it replaces closed. Both roles of the coordination
 * exchange end here. Two peers behind the same public address first try the
 * LAN (lan.ts): most routers do not hairpin, so the shared external endpoint
 * usually leads nowhere.
 */
import type { Connection, Logger, PeerId, Upgrader } from '@libp2p/interface'
import { isRelayed } from '../host.ts'
import type { HolePunchConnectionManager, HolePunchNodeEvents } from './api.ts'
import type { Progress } from './attempts.ts'
import { offeredLanCandidates, sharedPublicAddress } from './candidates.ts'
import type { PunchOffer } from './coordination.ts'
import { HolePunchTimeoutError, SameNatUnreachableError } from './errors.ts'
import { connectOverLan } from './lan.ts'
import { type HolePunchSettings, MAX_ATTEMPT_TIMEOUT_MS } from './settings.ts'
import { simultaneousOpen } from './simopen.ts'
import { isUpgradeInitiator, upgradePunchedSocket } from './upgrade.ts'

/** Pause after a fast failure (RST) in the punch loop, from the lab study */
const RETRY_DELAY_MS = 25

/** The LAN stage's window: a LAN dial answers in milliseconds, a dead candidate must not hold the punch long */
const LAN_WINDOW_MS = 2_000

/** What a punch needs of the service that runs it */
export interface PunchSetup {
  /** This host's peer id: with the peer's, decides which side initiates the upgrade */
  self: PeerId
  punchPort: number
  settings: Pick<
    HolePunchSettings,
    'localAddress' | 'attemptTimeoutMs' | 'deadlineMs' | 'upgradeTimeoutMs' | 'closeRelayed' | 'allowLanDials'
  >
  upgrader: Upgrader
  connectionManager: HolePunchConnectionManager
  /** Where the LAN stage sees the peer's own dial arrive */
  events: HolePunchNodeEvents
  log: Logger
}

/** Both offers of the exchange: this host's and the peer's */
export interface Offers {
  local: PunchOffer
  remote: PunchOffer
}

/**
 * A direct connection to `peer`: over the LAN first when both offers share the
 * public address, else (or then) punched to the peer's observed endpoint and
 * upgraded. Fills in `progress` as it goes.
 *
 * @throws {SameNatUnreachableError} one public address, and neither the LAN nor the hairpin worked
 */
export async function punchAndUpgrade(
  setup: PunchSetup,
  peer: PeerId,
  offers: Offers,
  rttMs: number,
  progress: Progress,
  signal: AbortSignal,
): Promise<Connection> {
  const shared = sharedPublicAddress(offers.local, offers.remote)
  if (shared === undefined) return punchPublic(setup, peer, offers.remote, rttMs, progress, signal)
  const lan = offeredLanCandidates(offers.remote)
  // one public address: these are on our site, if not on our subnet (the dial scope would refuse those)
  if (lan.length > 0) setup.settings.allowLanDials?.(lan.map((c) => c.address))
  // neither side offered one (both decide alike, so both skip the window): nothing can come over the LAN
  const overLan =
    lan.length === 0 && offeredLanCandidates(offers.local).length === 0
      ? { connection: undefined, tried: [] }
      : await connectOverLan(peer, lan, {
          connectionManager: setup.connectionManager,
          events: setup.events,
          log: setup.log,
          windowMs: Math.min(LAN_WINDOW_MS, setup.settings.deadlineMs),
          signal,
        })
  if (overLan.connection !== undefined) {
    progress.lan = true
    if (setup.settings.closeRelayed) closeRelayed(setup.connectionManager, peer)
    return overLan.connection
  }
  setup.log('no LAN connection to %p behind the shared address %s; punching to it', peer, shared)
  try {
    return await punchPublic(setup, peer, offers.remote, rttMs, progress, signal)
  } catch (err) {
    if (!(err instanceof HolePunchTimeoutError)) throw err
    throw new SameNatUnreachableError(shared, overLan.tried, { cause: err })
  }
}

/** Punches to `remote`'s observed endpoint and upgrades the socket */
async function punchPublic(
  setup: PunchSetup,
  peer: PeerId,
  remote: PunchOffer,
  rttMs: number,
  progress: Progress,
  signal: AbortSignal,
): Promise<Connection> {
  const { settings } = setup
  const target = remote.observed[0]
  if (target === undefined) throw new Error('unreachable: offers carry at least one endpoint')
  progress.target = target
  const attemptTimeoutMs = Math.min(MAX_ATTEMPT_TIMEOUT_MS, Math.max(settings.attemptTimeoutMs, 2 * rttMs))
  const t0 = performance.now()
  const punched = await simultaneousOpen(target, {
    localPort: setup.punchPort,
    localAddress: settings.localAddress,
    attemptTimeoutMs,
    retryDelayMs: RETRY_DELAY_MS,
    deadlineMs: settings.deadlineMs,
    signal,
  })
  progress.synAttempts = punched.attempts
  progress.connectMs = Math.round(performance.now() - t0)
  const t1 = performance.now()
  const connection = await upgradePunchedSocket(punched.socket, peer, {
    upgrader: setup.upgrader,
    initiator: isUpgradeInitiator(setup.self, peer),
    signal: AbortSignal.any([signal, AbortSignal.timeout(settings.upgradeTimeoutMs)]),
    log: setup.log,
  })
  progress.upgradeMs = Math.round(performance.now() - t1)
  if (settings.closeRelayed) closeRelayed(setup.connectionManager, peer)
  return connection
}

/** As DCUtR does: new streams would pick the direct connection anyway, and the relay's capacity is finite */
function closeRelayed(connectionManager: HolePunchConnectionManager, peer: PeerId): void {
  for (const connection of connectionManager.getConnections(peer)) {
    if (!isRelayed(connection) || connection.status !== 'open') continue
    connection.close({ signal: AbortSignal.timeout(5_000) }).catch((err: unknown) => {
      connection.abort(err instanceof Error ? err : new Error(String(err)))
    })
  }
}
