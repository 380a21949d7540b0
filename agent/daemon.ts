/**
 * The agent daemon: identity and state in one directory, enrollment on first
 * start, then one connection to the coordinator over which manifests come down
 * and signed status reports go up, with the update state machine in between.
 *
 *   <state>/identity.key     the machine's Ed25519 key (= its PeerId), 0600
 *   <state>/enrollment.json  pinned fleet root, machine name, tags, coordinator
 *   <state>/update.json      the update journal (agent/update-journal.ts)
 *   <state>/manifests/       signed manifests of the newest updates: the replay mark without update.json
 *   <state>/revocations.json the fleet's signed revocation list, as far as this agent has it
 *   <state>/coordinators.list the fleet root's signed list of coordinators to fail over to (failover.ts)
 *   <state>/outbox/          signed status reports not yet acknowledged
 *   <state>/profile/         generations and the `current` symlink (profile activator)
 *   <state>/nix/             NAR downloads, a GC root and generation names (nixos activator)
 */

import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { identifyPush } from '@libp2p/identify'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { CertificateMemo, DOMAINS, type PrivateKey, PublicKey } from '../keys/index.ts'
import { acquireDirLock, type DirLock, ensureDir, errorMessage, raceSignal } from '../lib/index.ts'
import {
  checkAddresses,
  createHost,
  DialScope,
  extraService,
  type FleetHost,
  type HolePunchService,
  holePunch,
  holePunchDetails,
  keepRuntimeFile,
  snapshotHost,
  stopHost,
} from '../net/index.ts'
import {
  MachineTagsRefusedError,
  type StatusReport,
  sealEnvelope,
  statusReportSchema,
} from '../protocol/index.ts'
import { coordinatorBlobFetcher, httpBlobFetcher, routeBlobFetcher } from './blob-fetcher.ts'
import { agentDiagnosis } from './diagnosis.ts'
import { type CoordinatorFinder, coordinatorFinder, relaysOf } from './discovery.ts'
import {
  agentIdentity,
  checkToken,
  Enrollment,
  EnrollmentError,
  type EnrollmentFile,
  enrollAt,
  enrollWithCoordinator,
  readEnrollmentFile,
} from './enroll.ts'
import { type CoordinatorState, Failover } from './failover.ts'
import { CoordinatorLink, type LinkState } from './link.ts'
import { meshNixCache } from './nix-cache-client.ts'
import { nixosActivator, nixosEnv } from './nixos-activator.ts'
import { Outbox, reportKind } from './outbox.ts'
import { profileActivator } from './profile-activator.ts'
import { AgentRevocations } from './revocations.ts'
import { createUpdater, type ReportBody, type Updater } from './updater.ts'

export interface AgentOptions {
  stateDir: string
  /**
   * The enrollment token, read only when the agent is not enrolled yet: a token
   * file named in a config file may be deleted once the agent has enrolled.
   */
  token?: () => Promise<string>
  /** Overrides the coordinator addresses from the token/enrollment. */
  coordinatorAddrs?: string[]
  /** Hold a standby connection to the coordinator it would fail over to (agent/standby.ts); default true. */
  standby?: boolean
  /**
   * Relays (or coordinators) to join the fleet's DHT through, as multiaddrs
   * ending in /p2p/<peer id>. With them the agent looks the coordinator up by
   * peer id whenever its known addresses fail (discovery.ts).
   */
  bootstrap?: string[]
  listen?: string[]
  /** Public observers (`ip:port`, run by relays) that enable hole punching to a coordinator behind NAT. */
  observers?: string[]
  /** Longest NAT keepalive interval of the punch port (hole punching's reprobeIntervalMs) */
  natKeepaliveMaxMs?: number
  keepaliveMs?: number
  /** Environment passed to activate hooks and health checks. */
  hookEnv?: Record<string, string>
  /** How generations are installed: `auto` is `nixos` on NixOS (/etc/NIXOS exists), else `profile`. */
  activator?: ActivatorChoice
  /** The profile the nixos activator adds generations to. Default /nix/var/nix/profiles/system. */
  nixProfile?: string
  /** Profile generations the nixos activator keeps. Default 5. */
  nixKeepGenerations?: number
  /** The IANA time zone maintenance windows are read in. Default: the system's. */
  timeZone?: string
  /** Structured events for the CLI (JSON lines) and tests. */
  emit?: (event: string, fields: Record<string, unknown>) => void
}

export interface RunningAgent {
  host: FleetHost
  enrollment: EnrollmentFile
  updater: Updater
  link: CoordinatorLink
  /** Signed reports not yet acknowledged (agent/metrics.ts reads its size). */
  outbox: Outbox
  stop(): Promise<void>
}

export async function startAgent(options: AgentOptions): Promise<RunningAgent> {
  // Before the state directory, the lock and the host: a bad address fails at once, naming its flag.
  checkAddresses(options.listen ?? [], '--listen', 'listen')
  checkAddresses(options.coordinatorAddrs ?? [], '--coordinator-addr')
  checkAddresses(options.bootstrap ?? [], '--bootstrap', 'peer')
  // Two agents with one identity would take the coordinator link from each other forever.
  await ensureDir(options.stateDir)
  const lock = await acquireDirLock(options.stateDir, 'fleetmesh agent')
  try {
    return await startLocked(options, lock)
  } catch (err) {
    await lock.release()
    throw err
  }
}

async function startLocked(options: AgentOptions, lock: DirLock): Promise<RunningAgent> {
  const emit = options.emit ?? (() => {})
  const enrollmentPath = join(options.stateDir, 'enrollment.json')
  const key = await agentIdentity(join(options.stateDir, 'identity.key'), enrollmentPath)
  const bootstrap = options.bootstrap ?? []
  const punchWith: { coordinator?: string } = {}
  // another network's private addresses (learned from the DHT, identify) only where they can be ours
  const dialScope = new DialScope({ allow: [...bootstrap, ...(options.coordinatorAddrs ?? [])] })
  const host = await createHost({
    role: 'agent',
    privateKey: key.toLibp2p(),
    ...(options.listen ? { listen: options.listen } : {}),
    ...(bootstrap.length > 0 ? { bootstrap } : {}),
    dialScope,
    extraServices: {
      // learns the coordinator's new addresses (a new relay reservation) while connected
      identifyPush: identifyPush(),
      // upgrades a relayed connection to the coordinator to a direct one where the NATs allow
      ...(options.observers && options.observers.length > 0
        ? {
            holePunch: holePunch({
              observers: options.observers,
              reprobeIntervalMs: options.natKeepaliveMaxMs,
              // its coordinator only (known once enrolled), never a stranger met through a relay
              shouldPunch: (peer) => peer.toString() === punchWith.coordinator,
              // its coordinator's LAN addresses, when both are behind one public address
              allowLanDials: (ips) => dialScope.allowLan(ips),
            }),
          }
        : {}),
    },
  })
  let linkState: CoordinatorState = { connected: false }
  let stopStandby = async (): Promise<void> => {}
  const snapshot = () =>
    snapshotHost(host, 'agent', {
      coordinator: linkState,
      ...holePunchDetails(host, options.observers),
    })
  const runtime = keepRuntimeFile(options.stateDir, snapshot)
  try {
    const finderFor = (
      peerId: string,
      coordinatorAddrs: readonly string[] = [],
    ): CoordinatorFinder | undefined => {
      // without --bootstrap, the relays the coordinator is reached through are the DHT's way in
      const peers = bootstrap.length > 0 ? bootstrap.map((a) => multiaddr(a)) : relaysOf(coordinatorAddrs)
      if (peers.length === 0) return undefined
      const find = coordinatorFinder({ host, coordinator: peerIdFromString(peerId), bootstrap: peers })
      return async (signal) => {
        try {
          const addrs = await find(signal)
          emit('discovered', { coordinator: peerId, addrs: addrs.map((a) => a.toString()) })
          return addrs
        } catch (err) {
          emit('discovery-failed', { coordinator: peerId, error: errorMessage(err) })
          throw err
        }
      }
    }
    const enrollment = await enrollIfNeeded(host, enrollmentPath, options, emit, finderFor, dialScope)
    // not during enrollment: the coordinator would refuse a machine it does not know yet
    punchWith.coordinator = enrollment.coordinator.peerId
    // the key lets reports be renumbered when the coordinator's mark is above the counter (outbox.ts)
    const outbox = await Outbox.open(options.stateDir, { signer: key })
    const fleet = { fleetRoot: PublicKey.parse(enrollment.fleetRoot), fleetId: enrollment.fleetId }
    // the enrollment coordinator (at --coordinator-addr if given), then the others of the fleet's list
    const { stateDir, coordinatorAddrs } = options
    const standby = options.standby === false ? {} : { standby: { host } }
    const failoverInit = { stateDir, coordinatorAddrs, fleet, finderFor, emit, ...standby }
    const allow = (a: readonly string[]) => dialScope.allow(a)
    const failover = await Failover.open({ ...failoverInit, enrolled: enrollment.coordinator, allow })
    stopStandby = () => failover.stop()
    let link: CoordinatorLink | undefined
    let updater: Updater | undefined
    const revocations = await AgentRevocations.open(options.stateDir, fleet, {
      onProblem: (error) => {
        emit('revocation-alarm', { ...error })
        void updater?.reportProblem(error)
      },
      onChange: () => updater?.revocationsChanged(),
    })
    // Its tags change only by a signed tag record from an admin (Enrollment.takeTags).
    const enrolled = new Enrollment(enrollmentPath, enrollment)
    // A function: every check sees the revocation list and the tags as they are at that moment.
    const certificates = new CertificateMemo()
    const trust = () => ({
      ...fleet,
      certificates,
      machine: enrollment.machine,
      tags: enrolled.current.tags,
      revocations: revocations.view,
    })
    const report = makeReporter(key, enrollment.machine, outbox, () => link?.flush(), emit)
    const activatorKind = await chooseActivator(options.activator ?? 'auto')
    const activator =
      activatorKind === 'nixos'
        ? nixosActivator({
            root: join(options.stateDir, 'nix'),
            cache: meshNixCache(host, failover.peer),
            machine: enrollment.machine,
            ...(options.nixProfile ? { profile: options.nixProfile } : {}),
            env: nixosEnv(options.hookEnv),
          })
        : profileActivator({
            root: join(options.stateDir, 'profile'),
            fetcher: routeBlobFetcher({
              coordinator: coordinatorBlobFetcher(host, failover.peer),
              http: httpBlobFetcher(),
            }),
            ...(options.hookEnv ? { env: options.hookEnv } : {}),
          })
    updater = await createUpdater({
      stateDir: options.stateDir,
      trust,
      revocationsSynced: (signal) => {
        // A resumed update gets here during recover(), before the link would start: it needs
        // the coordinator's revocation list now, and its confirmation later.
        link?.start()
        return revocations.whenSynced(signal)
      },
      activator,
      ...(activatorKind === 'nixos' ? { keepGenerations: options.nixKeepGenerations ?? 5 } : {}),
      confirm: (signal) => {
        if (link === undefined) return Promise.reject(new Error('no link'))
        // The updater aborts the signal when the manifest's confirm timeout runs out.
        return raceSignal(link.roundTrip(86_400_000), signal)
      },
      report,
      updateLog: (chunk) => link?.sendUpdateLog(chunk),
      ...(options.timeZone ? { timeZone: options.timeZone } : {}),
      ...(options.hookEnv ? { healthEnv: options.hookEnv } : {}),
      onError: (err, context) => emit('warning', { context, message: errorMessage(err) }),
    })
    link = new CoordinatorLink({
      host,
      coordinator: failover.current().peer,
      coordinatorAddrs: failover.current().addrs,
      machine: enrollment.machine,
      queue: {
        pending: () => outbox.pending(),
        ack: async (seq) => {
          await outbox.ack(seq)
          emit('acked', { seq })
        },
        reconcile: (stored) => outbox.reconcile(stored),
      },
      onManifest: (envelope) => {
        emit('manifest', { bytes: envelope.byteLength })
        void updater.offer(envelope).then(
          (o) => emit('offer', { outcome: o.outcome, manifestId: o.manifestId, error: o.error }),
          (err: unknown) => emit('warning', { context: 'offer', message: errorMessage(err) }),
        )
      },
      ...(options.keepaliveMs
        ? { keepaliveMs: options.keepaliveMs, deadAfterMs: options.keepaliveMs * 3 }
        : {}),
      coordinators: failover,
      onCoordinators: failover.receive,
      // `fleetmesh doctor <machine>`: what runtime.json would show, asked over the link
      revocations,
      onTags: async (envelope) => {
        try {
          const taken = await enrolled.takeTags(envelope, { ...fleet, revocations: revocations.view })
          if (taken !== 'current') emit('tags', { tags: taken.record.tags, version: taken.record.version })
        } catch (err) {
          // never applied; the coordinator hears of it with the rule's code
          const error = {
            code: err instanceof MachineTagsRefusedError ? err.code : 'tags-not-saved',
            message: errorMessage(err).slice(0, 2000),
          }
          emit('tags-refused', error)
          void updater.reportProblem(error).catch(() => {})
        }
      },
      diagnose: () =>
        agentDiagnosis({
          machine: enrollment.machine,
          snapshot: snapshot(),
          coordinator: { peerId: failover.peer().toString(), addrs: failover.current().addrs.map(String) },
        }),
      log: (msg) => emit('log', { msg }),
      onPathUpgraded: ({ from, to }) =>
        emit('path-upgraded', { from: from.path, to: to.path, fromAddr: from.addr, toAddr: to.addr }),
      onState: (state: LinkState) => {
        linkState = failover.describe(state)
        if (state.connected) punchWith.coordinator = failover.peer().toString()
        // a relayed connection opened before enrollment ended was no one to punch with then
        if (state.connected && state.path === 'relayed')
          extraService<HolePunchService>(host, 'holePunch')?.reconsider(failover.peer())
        runtime.refresh()
        emit(state.connected ? 'connected' : 'disconnected', { ...linkState })
      },
    })
    // Finish whatever a crash interrupted before taking new work, then say where we are.
    const recovered = await updater.recover()
    if (recovered !== null) emit('recovered', { outcome: recovered.outcome, error: recovered.error })
    // The first report after a start repeats the last update's outcome, error and log included:
    // a bare status here would replace the failure the coordinator shows with `error: null`.
    if ((await outbox.pending()).length === 0 && recovered === null) await updater.reportCurrent()
    link.start()
    emit('ready', {
      activator: activatorKind,
      machine: enrollment.machine,
      peerId: host.peerId.toString(),
      fleetId: enrollment.fleetId,
    })
    const running: RunningAgent = {
      host,
      enrollment,
      updater,
      link,
      outbox,
      async stop() {
        await link?.stop()
        await stopStandby()
        await updater.close()
        await runtime.stop()
        await stopHost(host)
        await lock.release()
      },
    }
    return running
  } catch (err) {
    await stopStandby()
    await runtime.stop()
    await stopHost(host)
    throw err
  }
}

export type ActivatorChoice = 'auto' | 'profile' | 'nixos'

/** `auto` picks `nixos` on NixOS, which marks itself with /etc/NIXOS. */
export async function chooseActivator(
  choice: ActivatorChoice,
  marker = '/etc/NIXOS',
): Promise<'profile' | 'nixos'> {
  if (choice !== 'auto') return choice
  return (await stat(marker).catch(() => undefined)) !== undefined ? 'nixos' : 'profile'
}

async function enrollIfNeeded(
  host: FleetHost,
  path: string,
  options: AgentOptions,
  emit: NonNullable<AgentOptions['emit']>,
  finderFor: (peerId: string, coordinatorAddrs?: readonly string[]) => CoordinatorFinder | undefined,
  dialScope: DialScope,
): Promise<EnrollmentFile> {
  const existing = await readEnrollmentFile(path)
  if (existing !== undefined) {
    if (options.token !== undefined)
      emit('log', { msg: `already enrolled as "${existing.machine}"; ignoring --token` })
    return existing
  }
  if (options.token === undefined) {
    throw new EnrollmentError(
      'not-enrolled',
      `not enrolled yet (no ${path}); start once with --token <token from "fleetmesh enroll">`,
    )
  }
  const token = checkToken(await options.token())
  const others = token.others.flatMap((c) => c.addrs)
  dialScope.allow([...token.coordinator.addrs, ...others])
  if (!options.coordinatorAddrs?.length)
    checkAddresses(token.coordinator.addrs, "the token's coordinator address")
  let enrollment: EnrollmentFile
  try {
    const log = (msg: string) => emit('log', { msg })
    enrollment = await enrollWithCoordinator(host, token, path, options.coordinatorAddrs, log)
  } catch (err) {
    const find = finderFor(token.coordinator.peerId, [
      ...(options.coordinatorAddrs ?? []),
      ...token.coordinator.addrs,
    ])
    if (!(err instanceof EnrollmentError && err.code === 'unreachable') || find === undefined) throw err
    emit('log', { msg: `${err.message}; looking the coordinator up in the DHT` })
    // The addresses found are what the enrollment file then keeps.
    const found = await find(AbortSignal.timeout(30_000)).catch((lookup: unknown) => {
      const why = `${err.message}; looking it up failed: ${errorMessage(lookup)}`
      throw new EnrollmentError('unreachable', why, { cause: lookup })
    })
    // the enrollment file keeps at most 16 addresses
    const addrs = found.slice(0, 16).map((a) => a.toString())
    enrollment = await enrollAt(host, token, path, { peerId: token.coordinator.peerId, addrs })
  }
  emit('enrolled', { machine: enrollment.machine, tags: enrollment.tags, fleetId: enrollment.fleetId })
  return enrollment
}

function makeReporter(
  key: PrivateKey,
  machine: string,
  outbox: Outbox,
  flush: () => void,
  emit: NonNullable<AgentOptions['emit']>,
) {
  return async (body: ReportBody): Promise<void> => {
    const seq = await outbox.nextSeq()
    const report: StatusReport = { v: 1, machine, seq, timestamp: Date.now(), ...body }
    const envelope = sealEnvelope(statusReportSchema, DOMAINS.status, report, key)
    await outbox.enqueue(seq, envelope, reportKind(report))
    emit('status', {
      seq,
      state: report.state,
      currentGeneration: report.currentGeneration,
      desiredGeneration: report.desiredGeneration,
      progress: report.progress,
      error: report.error,
    })
    flush()
  }
}
