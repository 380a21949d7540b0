/**
 * One punch, once both sides agreed on it: simultaneous open towards the
 * peer's observed endpoint, the libp2p upgrade of the punched socket, and the
 * relayed connections it replaces closed. Both roles of the coordination
 * exchange end here.
 */
import type { Connection, Logger, PeerId, Upgrader } from '@libp2p/interface'
import { isRelayed } from '../host.ts'
import type { HolePunchConnectionManager } from './api.ts'
import type { Progress } from './attempts.ts'
import type { PunchOffer } from './coordination.ts'
import { type HolePunchSettings, MAX_ATTEMPT_TIMEOUT_MS } from './settings.ts'
import { simultaneousOpen } from './simopen.ts'
import { isUpgradeInitiator, upgradePunchedSocket } from './upgrade.ts'

/** Pause after a fast failure (RST) in the punch loop, from the lab study */
const RETRY_DELAY_MS = 25

/** What a punch needs of the service that runs it */
export interface PunchSetup {
  /** This host's peer id: with the peer's, decides which side initiates the upgrade */
  self: PeerId
  punchPort: number
  settings: Pick<
    HolePunchSettings,
    'localAddress' | 'attemptTimeoutMs' | 'deadlineMs' | 'upgradeTimeoutMs' | 'closeRelayed'
  >
  upgrader: Upgrader
  connectionManager: HolePunchConnectionManager
  log: Logger
}

/** Punches to `remote`'s first endpoint and upgrades the socket; fills in `progress` as it goes */
export async function punchAndUpgrade(
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
