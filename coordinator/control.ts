/**
 * The coordinator's side of `/fleetmesh/control/1`: one long-lived stream per
 * enrolled agent.
 *
 *   agent → hello {machine, lastAckedSeq}      coordinator → hello {lastAckedSeq: stored}
 *   coordinator → manifest {envelope}            on connect and whenever desired state changes
 *   agent → status {envelope}                    coordinator → ack {seq} once durably stored
 *   agent → ping {nonce}                         coordinator → pong {nonce}
 *
 * Unknown peers get an error frame and the stream closes. A status report must be
 * signed by the machine's own key (the one that enrolled) and name that machine.
 */
import type { Connection } from '@libp2p/interface'
import { DOMAINS, PublicKey } from '../keys/index.ts'
import { FLEETMESH_VERSION } from '../lib/index.ts'
import { connectionPath } from '../net/index.ts'
import type { ConnectionPath, FramedStream } from '../protocol/index.ts'
import {
  type ControlFrame,
  controlFrameSchema,
  decodeMessage,
  encodeMessage,
  type Hello,
  MAX_ENVELOPE_BYTES,
  openEnvelope,
  statusReportSchema,
  WIRE_VERSION,
} from '../protocol/index.ts'
import type { FleetEvents } from './events.ts'
import { StatusIngest } from './ingest.ts'
import type { FleetStore, MachineRecord } from './store.ts'

/** What the coordinator's hello reports as its software. */
export const SOFTWARE = `fleetmesh/${FLEETMESH_VERSION}`
const MAX_CONTROL_FRAME = MAX_ENVELOPE_BYTES + 1024
/** Reports from one agent awaiting their durable commit before the coordinator reads more. */
const MAX_REPORTS_IN_FLIGHT = 64
/**
 * How often a connected machine's last-seen time is refreshed while frames keep
 * coming: if the coordinator dies without a clean stop, a machine's last sighting
 * is then at most this old, not the time it connected.
 */
const LAST_SEEN_REFRESH_MS = 60_000

export interface ControlInit {
  store: FleetStore
  events: FleetEvents
  /** An agent silent for this long is considered gone and its stream is reset. */
  idleTimeoutMs: number
  log: (msg: string) => void
}

export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation'
}

class Session {
  readonly machine: string
  readonly fs: FramedStream
  readonly path: ConnectionPath
  /** When the store last recorded this machine as seen. */
  seenAt = Date.now()
  #lastPushedManifest: string | undefined

  constructor(machine: string, fs: FramedStream, path: ConnectionPath) {
    this.machine = machine
    this.fs = fs
    this.path = path
  }

  async send(frame: ControlFrame): Promise<void> {
    await this.fs.send(encodeMessage(controlFrameSchema, frame))
  }

  async push(manifestId: string, envelope: Uint8Array): Promise<void> {
    if (this.#lastPushedManifest === manifestId) return
    this.#lastPushedManifest = manifestId
    await this.send({ t: 'manifest', envelope })
  }
}

export class ControlService {
  readonly #init: ControlInit
  readonly #sessions = new Map<string, Session>()
  readonly ingest: StatusIngest

  constructor(init: ControlInit) {
    this.#init = init
    this.ingest = new StatusIngest(init.store)
  }

  get online(): ReadonlyMap<string, unknown> {
    return this.#sessions
  }

  /**
   * Records every connected machine as seen now. Called as the coordinator shuts
   * down, before its streams close: otherwise a machine connected until the stop
   * would show the time it connected as its last sighting (the disconnect's own
   * record can lose the race with the store closing).
   */
  async recordLastSeen(now = Date.now()): Promise<void> {
    for (const session of this.#sessions.values())
      await this.#init.store
        .touchMachine(session.machine, { lastSeen: now, path: session.path })
        .catch(() => {})
  }

  #refreshLastSeen(session: Session): void {
    const now = Date.now()
    if (now - session.seenAt < LAST_SEEN_REFRESH_MS) return
    session.seenAt = now
    void this.#init.store.touchMachine(session.machine, { lastSeen: now, path: session.path }).catch(() => {})
  }

  /** Pushes the machine's desired manifest if it has a live session. */
  async pushDesired(machine: string): Promise<void> {
    const session = this.#sessions.get(machine)
    if (session === undefined) return
    const desired = await this.#init.store.getDesired(machine)
    if (desired !== undefined) await session.push(desired.id, desired.envelope).catch(() => {})
  }

  readonly handle = async (fs: FramedStream, connection: Connection): Promise<void> => {
    const { store, events } = this.#init
    const record = await store.getMachineByPeer(connection.remotePeer.toString())
    const first = await this.#read(fs)
    if (record === undefined) {
      await this.#refuse(
        fs,
        'not-enrolled',
        `peer ${connection.remotePeer} is not an enrolled machine; enroll it with a token first`,
      )
      return
    }
    if (first === undefined || first.t !== 'hello' || first.role !== 'agent') {
      throw new ProtocolViolation('the first control frame must be an agent hello')
    }
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
    const session = new Session(record.name, fs, path)
    const previous = this.#sessions.get(record.name)
    this.#sessions.set(record.name, session)
    // A reconnecting agent may still have a half-dead old stream; the new one wins.
    previous?.fs.abort(new Error('superseded by a newer control stream from the same machine'))
    try {
      await store.touchMachine(record.name, { lastSeen: Date.now(), path })
      events.emit({ type: 'online', machine: record.name, path })
      const hello: Hello = {
        t: 'hello',
        wire: WIRE_VERSION,
        role: 'coordinator',
        software: SOFTWARE,
        capabilities: [],
        lastAckedSeq: await store.lastStatusSeq(record.name),
      }
      await session.send(hello)
      await this.pushDesired(record.name)
      await this.#serve(session, record)
    } finally {
      if (this.#sessions.get(record.name) === session) {
        this.#sessions.delete(record.name)
        await store.touchMachine(record.name, { lastSeen: Date.now(), path }).catch(() => {})
        events.emit({ type: 'offline', machine: record.name })
      }
    }
  }

  async #serve(session: Session, record: MachineRecord): Promise<void> {
    const key = PublicKey.parse(record.publicKey)
    // Reports are pipelined: the next frame is read while earlier ones wait for their
    // group commit; acks still go out in order, each after its report is durable.
    let acks: Promise<void> = Promise.resolve()
    let inFlight = 0
    let failure: unknown
    while (true) {
      if (failure !== undefined) throw failure
      if (inFlight >= MAX_REPORTS_IN_FLIGHT) await acks
      const frame = await this.#read(session.fs)
      this.#refreshLastSeen(session)
      if (frame === undefined) {
        await acks
        if (failure !== undefined) throw failure
        return
      }
      switch (frame.t) {
        case 'ping':
          await session.send({ t: 'pong', nonce: frame.nonce })
          break
        case 'status': {
          const stored = this.#ingest(record, key, frame.envelope)
          inFlight++
          acks = acks.then(async () => {
            try {
              if (failure === undefined) await session.send({ t: 'ack', seq: await stored })
            } catch (err) {
              failure ??= err
              session.fs.abort(err as Error)
            } finally {
              inFlight--
            }
          })
          break
        }
        case 'pong':
        case 'error':
          break
        default:
          throw new ProtocolViolation(`agents may not send "${frame.t}" frames`)
      }
    }
  }

  async #ingest(record: MachineRecord, key: PublicKey, envelope: Uint8Array): Promise<number> {
    const opened = openEnvelope(statusReportSchema, DOMAINS.status, envelope)
    if (!opened.signer.equals(key))
      throw new ProtocolViolation(`status report for ${record.name} signed by another key`)
    if (opened.value.machine !== record.name) {
      throw new ProtocolViolation(`machine ${record.name} sent a report about "${opened.value.machine}"`)
    }
    const status = {
      machine: record.name,
      seq: opened.value.seq,
      report: opened.value,
      envelope,
      receivedAt: Date.now(),
    }
    const outcome = await this.ingest.record(status)
    if (outcome === 'stored') this.#init.events.emit({ type: 'status', machine: record.name, status })
    return opened.value.seq
  }

  async #read(fs: FramedStream): Promise<ControlFrame | undefined> {
    const bytes = await fs.read({ timeoutMs: this.#init.idleTimeoutMs })
    if (bytes === undefined) return undefined
    return decodeMessage(controlFrameSchema, bytes, 'control frame', MAX_CONTROL_FRAME)
  }

  async #refuse(fs: FramedStream, code: string, message: string): Promise<void> {
    this.#init.log(`control: refused: ${message}`)
    await fs.send(encodeMessage(controlFrameSchema, { t: 'error', error: { code, message } }))
  }
}
