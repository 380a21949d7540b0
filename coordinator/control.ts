/**
 * The coordinator's side of `/fleetmesh/control/1`: one long-lived stream per
 * enrolled agent.
 *
 *   agent → hello {machine, lastAckedSeq}      coordinator → hello {lastAckedSeq: stored}
 *   coordinator → manifest {envelope}            on connect and whenever desired state changes
 *   agent → status {envelope}                    coordinator → ack {seq} once durably stored
 *   agent → ping {nonce}                         coordinator → pong {nonce}
 *   coordinator → ping {nonce}                   agent → pong {nonce}          (`fleetmesh ping`)
 *   coordinator → diagnose {nonce}               agent → diagnosis {nonce, report}  (`fleetmesh doctor`)
 *   coordinator → revocations {entries}          after hello, before any manifest, and on every revoke
 *   agent → revocations {entries}                entries the coordinator's hello showed it lost
 *   coordinator → machine-tags {envelope}        the latest signed tag record: before any manifest, and on change
 *   agent → update-log {manifestId, offset, text}  output of its running update, to watchers (update-log-gate.ts)
 *
 * Unknown peers get an error frame and the stream closes. A status report must be
 * signed by the machine's own key (the one that enrolled) and name that machine.
 * Frames of a type this version does not know (a newer agent's) are skipped.
 */
import type { Connection } from '@libp2p/interface'
import { PublicKey } from '../keys/index.ts'
import { FLEETMESH_VERSION } from '../lib/index.ts'
import { connectionPath, connectionTransport } from '../net/index.ts'
import type { FramedStream } from '../protocol/index.ts'
import {
  type AgentDiagnosis,
  COORDINATOR_LIST_CAPABILITY,
  type ControlFrame,
  controlFrameSchema,
  DIAGNOSE_CAPABILITY,
  decodeControlFrame,
  encodeMessage,
  type Hello,
  isUnknownFrame,
  MAX_ENVELOPE_BYTES,
  WIRE_VERSION,
} from '../protocol/index.ts'
import { AgentRequestError, Session, type SessionInfo } from './control-session.ts'
import type { FleetEvents } from './events.ts'
import { type IngestOutcome, StatusIngest } from './ingest.ts'
import { CumulativeAcks } from './report-acks.ts'
import { ReportBudget } from './report-budget.ts'
import { sendRevocationsAfter, takeBackRevocations } from './revocations.ts'
import type { FleetStore, MachineRecord, StatusRecord } from './store.ts'
import { UpdateLogGate } from './update-log-gate.ts'
import { type OpenedReport, verifyPool } from './verify-pool.ts'

export { AgentRequestError, type SessionInfo } from './control-session.ts'

/** What the coordinator's hello reports as its software. */
export const SOFTWARE = `fleetmesh/${FLEETMESH_VERSION}`
const MAX_CONTROL_FRAME = MAX_ENVELOPE_BYTES + 1024
/** Reports from one agent awaiting their durable commit before the coordinator reads more. */
const MAX_REPORTS_IN_FLIGHT = 64
/** Reports of all agents together read and not yet committed (report-budget.ts): four full group commits. */
const MAX_FLEET_REPORTS_IN_FLIGHT = 1024
/**
 * How often a connected machine's last-seen time is refreshed while frames keep coming: if the coordinator
 * dies without a clean stop, a machine's last sighting is then at most this old, not the time it connected.
 */
const LAST_SEEN_REFRESH_MS = 60_000

export interface ControlInit {
  store: FleetStore
  events: FleetEvents
  /** An agent silent for this long is considered gone and its stream is reset. */
  idleTimeoutMs: number
  log: (msg: string) => void
  /** What revocation entries agents give back are checked against; without it they are not taken. */
  fleet?: { fleetRoot: PublicKey; fleetId: string }
  /** The fleet root's signed coordinator list (cluster-roster.ts), for agents with COORDINATOR_LIST_CAPABILITY. */
  coordinatorList?: () => Uint8Array | undefined
}

export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation'
}

export class ControlService {
  readonly #init: ControlInit
  readonly #sessions = new Map<string, Session>()
  readonly ingest: StatusIngest
  readonly #updateLogs = new UpdateLogGate(() => this.#init)
  readonly #reports = new ReportBudget(MAX_FLEET_REPORTS_IN_FLIGHT)
  readonly counts = { manifestsPushed: 0, refused: new Map<string, number>() } // for metrics
  /** Nonces of the coordinator's own requests to agents (pings, diagnose). */
  #nonce = 0

  constructor(init: ControlInit) {
    this.#init = init
    this.ingest = new StatusIngest(init.store)
  }

  get online(): ReadonlyMap<string, unknown> {
    return this.#sessions
  }

  /** Machines with a session at another coordinator of the fleet (cluster.ts sets it). */
  elsewhere: (machine: string) => boolean = () => false

  /** Connected to this coordinator or, when several serve the fleet, to another one. */
  isOnline(machine: string): boolean {
    return this.#sessions.has(machine) || this.elsewhere(machine)
  }

  /**
   * Records every connected machine as seen now. Called as the coordinator shuts
   * down, before its streams close: otherwise a machine connected until the stop
   * would show the time it connected as its last sighting (the disconnect's own
   * record can lose the race with the store closing).
   */
  async recordLastSeen(now = Date.now()): Promise<void> {
    const seen = (s: Session) => this.#init.store.touchMachine(s.machine, { lastSeen: now, path: s.path })
    await Promise.all([...this.#sessions.values()].map((s) => seen(s).catch(() => {}))) // SQLite: one transaction
  }

  #refreshLastSeen(session: Session): void {
    const now = Date.now()
    if (now - session.seenAt < LAST_SEEN_REFRESH_MS) return
    session.seenAt = now
    void this.#init.store.touchMachine(session.machine, { lastSeen: now, path: session.path }).catch(() => {})
  }

  /** How a machine is connected, while it is. */
  sessionInfo(machine: string): SessionInfo | undefined {
    return this.#sessions.get(machine)?.info
  }

  /**
   * One round trip to a connected machine over its control stream (ping →
   * pong, which every agent version answers at once), in milliseconds.
   */
  async probe(machine: string, timeoutMs: number): Promise<number> {
    const session = this.#live(machine)
    const started = performance.now()
    await session.request({ t: 'ping', nonce: ++this.#nonce }, timeoutMs, 'a probe')
    return performance.now() - started
  }

  /** A connected machine's diagnosis of its own network, asked over its control stream. */
  async diagnose(machine: string, timeoutMs: number): Promise<AgentDiagnosis> {
    const session = this.#live(machine)
    // An agent older than this capability would not answer, and before it learned to skip
    // unknown frames it would even drop its link over one.
    if (!session.info.capabilities.includes(DIAGNOSE_CAPABILITY))
      throw new AgentRequestError(
        'unsupported',
        `${machine} runs ${session.info.software}, which cannot diagnose itself remotely; upgrade its agent, or run "fleetmesh doctor --state <dir>" on the device`,
      )
    const request = { t: 'diagnose', nonce: ++this.#nonce } as const
    const reply = await session.request(request, timeoutMs, 'the diagnose request')
    if (reply.t !== 'diagnosis') throw new ProtocolViolation(`${machine} answered diagnose with ${reply.t}`)
    return reply.report
  }

  #live(machine: string): Session {
    const session = this.#sessions.get(machine)
    if (session === undefined) throw new AgentRequestError('offline', `${machine} is not connected`)
    return session
  }

  /** Sends every connected agent that holds the revocation list the entries it lacks. */
  pushRevocations(): void {
    for (const session of this.#sessions.values()) void this.#sendRevocations(session).catch(() => {})
  }

  #sendRevocations(session: Session): Promise<void> {
    if (session.revocationSeq === undefined) return Promise.resolve()
    const send = (entries: Uint8Array[]) => session.send({ t: 'revocations', entries })
    const sync = async () => {
      session.revocationSeq = await sendRevocationsAfter(this.#init.store, session.revocationSeq ?? 0, send)
    }
    session.revocationSync = session.revocationSync.catch(() => {}).then(sync)
    return session.revocationSync
  }

  /** Entries an agent holds that this store lacks (restored from an older backup): checked, kept, passed on. */
  async #takeBack(session: Session, entries: Uint8Array[]): Promise<void> {
    const { fleet, store, log } = this.#init
    if (fleet === undefined) return
    session.revocationSeq = await takeBackRevocations({ store, ...fleet }, session.machine, entries, log)
    this.pushRevocations()
  }

  /** Sends the machine's latest signed tag record (protocol/machine-tags.ts) if it has one and a live session. */
  async pushTags(machine: string): Promise<void> {
    const session = this.#sessions.get(machine)
    const record = session === undefined ? undefined : await this.#init.store.machineTags.get(machine)
    if (record !== undefined)
      await session?.send({ t: 'machine-tags', envelope: record.envelope }).catch(() => {})
  }

  /** The signed coordinator list to every connected agent that asked for it (a newer one was stored). */
  pushCoordinatorList(): void {
    for (const session of this.#sessions.values()) void this.#sendCoordinatorList(session).catch(() => {})
  }

  async #sendCoordinatorList(session: Session): Promise<void> {
    const envelope = this.#init.coordinatorList?.()
    if (envelope !== undefined && session.info.capabilities.includes(COORDINATOR_LIST_CAPABILITY))
      await session.send({ t: 'coordinators', envelope })
  }

  /** Each machine's desired manifest to its session: one read, one encode per manifest, no send awaits another. */
  async pushDesired(machines: readonly string[]): Promise<void> {
    const frames = new Map<string, Uint8Array>()
    for (const [machine, { id, envelope }] of await this.#init.store.getDesiredMany(machines)) {
      const frame = frames.get(id) ?? encodeMessage(controlFrameSchema, { t: 'manifest', envelope })
      frames.set(id, frame)
      const session = this.#sessions.get(machine) // none: offline, it reads its desired state on connect
      void session?.push(id, frame, this.counts).catch(() => {})
    }
  }

  readonly handle = async (fs: FramedStream, connection: Connection): Promise<void> => {
    const { store, events } = this.#init
    const record = await store.getMachineByPeer(connection.remotePeer.toString())
    // Refused before reading anything: an unknown peer gets no idle timeout to hold the stream for.
    if (record === undefined) {
      await this.#refuse(
        fs,
        'not-enrolled',
        `peer ${connection.remotePeer} is not an enrolled machine; enroll it with a token first`,
      )
      return // handleFramed hangs up: a peer that keeps its side open is reset after a grace
    }
    const first = await this.#read(fs)
    if (first === undefined || first.t !== 'hello' || first.role !== 'agent')
      throw new ProtocolViolation('the first control frame must be an agent hello')
    if (first.machine !== undefined && first.machine !== record.name) {
      await this.#refuse(
        fs,
        'wrong-machine',
        `this peer is enrolled as "${record.name}", not "${first.machine}"`,
      )
      return
    }
    if (first.wire !== WIRE_VERSION) {
      await this.#refuse(
        fs,
        'wire-version',
        `coordinator speaks wire version ${WIRE_VERSION}, agent ${first.wire}`,
      )
      return
    }
    const path = connectionPath(connection)
    const transport = connectionTransport(connection)
    const session = new Session(record.name, fs, {
      path,
      transport,
      remoteAddr: connection.remoteAddr.toString(),
      software: first.software,
      capabilities: first.capabilities,
    })
    const previous = this.#sessions.get(record.name)
    this.#sessions.set(record.name, session)
    // A reconnecting agent may still have a half-dead old stream; the new one wins.
    previous?.fs.abort(new Error('superseded by a newer control stream from the same machine'))
    try {
      const agentVersion = first.software
      await store.touchMachine(record.name, { lastSeen: Date.now(), path, transport, agentVersion })
      events.emit({ type: 'online', machine: record.name, path })
      const hello: Hello = {
        t: 'hello',
        wire: WIRE_VERSION,
        role: 'coordinator',
        software: SOFTWARE,
        capabilities: [UpdateLogGate.capability],
        lastAckedSeq: await store.lastStatusSeq(record.name),
        ...(first.revocations !== undefined ? { revocations: await store.revocationLog.head() } : {}),
      }
      await session.send(hello)
      // Before any manifest: an agent acts on one only once it holds the revocations its signer saw.
      session.revocationSeq = first.revocations?.seq
      await this.#sendRevocations(session)
      // Before the manifest too: the agent checks whether one targets it against its tags.
      await this.pushTags(record.name)
      await this.#sendCoordinatorList(session)
      session.ready = true // before its own read: a manifest committed after the read is pushed to it
      await this.pushDesired([record.name])
      await this.#serve(session, record)
    } finally {
      session.close()
      if (this.#sessions.get(record.name) === session) {
        this.#sessions.delete(record.name)
        await store.touchMachine(record.name, { lastSeen: Date.now(), path, transport }).catch(() => {})
        events.emit({ type: 'offline', machine: record.name })
      }
    }
  }

  async #serve(session: Session, record: MachineRecord): Promise<void> {
    const key = PublicKey.parse(record.publicKey)
    // Reports are pipelined: the next frame is read while earlier ones wait for their
    // group commit; acks still go out in order, one per commit batch, after its reports are durable.
    let acks: Promise<void> = Promise.resolve()
    /** Resolves once the last report read was handed to the store (or refused): the next goes in after it. */
    let handedIn: Promise<void> = Promise.resolve()
    /** Resolves once the last update output read was passed on (or dropped): a later report's event waits for it. */
    let outputPassed: Promise<void> = Promise.resolve()
    let inFlight = 0
    let failure: unknown
    // The first failure (a refused report, an ack that could not be sent) ends the stream.
    const fail = (err: unknown): void => {
      failure ??= err
      session.fs.abort(err as Error)
    }
    const acked = new CumulativeAcks((seq) => session.send({ t: 'ack', seq }), fail)
    while (true) {
      if (failure !== undefined) throw failure
      if (inFlight >= MAX_REPORTS_IN_FLIGHT) await acks
      const frame = await this.#read(session.fs)
      this.#refreshLastSeen(session)
      if (frame === undefined) {
        await acks
        await acked.settled().catch(() => {})
        if (failure !== undefined) throw failure
        return
      }
      switch (frame.t) {
        case 'ping':
          await session.send({ t: 'pong', nonce: frame.nonce })
          break
        case 'status': {
          // the fleet-wide bound: waits only in a burst (no await, not even a microtask, otherwise)
          const place = this.#reports.acquire()
          if (place !== undefined) await place
          const turn = Promise.withResolvers<void>()
          const stored = this.#ingest(record, key, frame.envelope, handedIn, turn.resolve, outputPassed)
          handedIn = turn.promise
          // A refusal is handled by the ack chain below, but only once the reports before it are in:
          // until then it must not count as unhandled (which would end the process).
          stored.catch(() => {})
          inFlight++
          acks = acks.then(async () => {
            try {
              const seq = await stored
              if (failure === undefined) acked.stored(seq)
            } catch (err) {
              fail(err)
            } finally {
              inFlight--
              this.#reports.release()
            }
          })
          break
        }
        case 'pong':
        case 'diagnosis':
          session.settle(frame)
          break
        case 'revocations':
          await this.#takeBack(session, frame.entries)
          break
        case 'update-log': // passed on once the reports before it are stored, and never awaited
          acks = this.#updateLogs.take(record.name, frame, acks)
          outputPassed = acks
          break
        case 'error':
          break
        default:
          throw new ProtocolViolation(`agents may not send "${frame.t}" frames`)
      }
    }
  }

  /**
   * Verifies one report beside the ones before it, then hands it to the store after
   * `before` (so in the order sent: workers answer out of order, and a watch saw a later
   * state before an earlier one, or lost it), calling `handedIn` then or on a refusal.
   * Its event goes out after `outputBefore`, the update output the agent sent before it:
   * two reports stored in one group commit would otherwise let the second's event (an
   * update's outcome) overtake the output between them, and a follower end without it.
   */
  async #ingest(
    record: MachineRecord,
    key: PublicKey,
    envelope: Uint8Array,
    before: Promise<void>,
    handedIn: () => void,
    outputBefore: Promise<void>,
  ): Promise<number> {
    const verifying = verifyPool.open(envelope) // on a worker thread: verify-pool.ts
    verifying.catch(() => {}) // a refusal is thrown below, in its turn
    let outcome: IngestOutcome
    let opened: OpenedReport
    let status: StatusRecord
    try {
      await before
      opened = await verifying
      if (!opened.signer.equals(key))
        throw new ProtocolViolation(`status report for ${record.name} signed by another key`)
      if (opened.value.machine !== record.name)
        throw new ProtocolViolation(`machine ${record.name} sent a report about "${opened.value.machine}"`)
      status = {
        machine: record.name,
        seq: opened.value.seq,
        report: opened.value,
        envelope,
        receivedAt: Date.now(),
      }
      const recorded = this.ingest.record(status) // queued for the group commit, in turn
      handedIn()
      outcome = await recorded
    } finally {
      handedIn()
    }
    if (outcome === 'stored') {
      await outputBefore // never rejects: the gate settles every frame it takes
      this.#init.events.emit({ type: 'status', machine: record.name, status })
    }
    // Acknowledged all the same (acks are cumulative), but never passed off as a duplicate.
    if (outcome === 'reused')
      this.#init.log(
        `control: ${record.name} sent report seq ${status.seq} (${status.report.state}) with other content than ` +
          `the report stored under it; its report numbering went back, so this one was not stored ` +
          `(${this.ingest.reused} such reports since start)`,
      )
    return opened.value.seq
  }

  /** The next frame of a type this version knows; a newer agent's other frames are skipped. */
  async #read(fs: FramedStream): Promise<ControlFrame | undefined> {
    while (true) {
      const bytes = await fs.read({ timeoutMs: this.#init.idleTimeoutMs })
      if (bytes === undefined) return undefined
      const frame = decodeControlFrame(bytes, MAX_CONTROL_FRAME)
      if (!isUnknownFrame(frame)) return frame
    }
  }

  async #refuse(fs: FramedStream, code: string, message: string): Promise<void> {
    this.#init.log(`control: refused: ${message}`)
    this.counts.refused.set(code, (this.counts.refused.get(code) ?? 0) + 1)
    await fs.send(encodeMessage(controlFrameSchema, { t: 'error', error: { code, message } }))
  }
}
