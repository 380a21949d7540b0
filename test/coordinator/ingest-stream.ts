/**
 * An agent's control stream as the coordinator's ControlService sees it, without
 * libp2p underneath: the agent's hello, then the given frames one read each,
 * then silence until the test (or the coordinator) ends it. Used by the ingest
 * and verify tests; the store is a real (in-memory) SQLite store.
 */
import { randomBytes } from 'node:crypto'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { ControlService } from '../../coordinator/control.ts'
import type { FleetStore } from '../../coordinator/store.ts'
import { DOMAINS, type PrivateKey } from '../../keys/index.ts'
import {
  type ControlFrame,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  type FramedStream,
  sealEnvelope,
  statusReportSchema,
  WIRE_VERSION,
} from '../../protocol/index.ts'
import { sampleStatus } from '../../testkit/fixtures.ts'

/** The hello frame an agent of `machine` opens its control stream with. */
export function agentHello(machine: string): Uint8Array {
  return encodeMessage(controlFrameSchema, {
    t: 'hello',
    wire: WIRE_VERSION,
    role: 'agent',
    software: 'test',
    capabilities: [],
    machine,
  })
}

export class ScriptedStream {
  readonly sent: ControlFrame[] = []
  /** Called as each frame is sent, before the send resolves. */
  onSend: (frame: ControlFrame) => void = () => {}
  aborted: Error | undefined
  readonly #frames: Uint8Array[]
  readonly #ended = Promise.withResolvers<undefined>()

  constructor(machine: string, frames: Uint8Array[]) {
    this.#frames = [agentHello(machine), ...frames]
  }

  async read(): Promise<Uint8Array | undefined> {
    return this.#frames.shift() ?? this.#ended.promise
  }

  async send(bytes: Uint8Array): Promise<void> {
    const frame = decodeControlFrame(bytes, 1 << 20) as ControlFrame
    this.sent.push(frame)
    this.onSend(frame)
  }

  /** The agent closes its side: the coordinator's next read ends. */
  end(): void {
    this.#ended.resolve(undefined)
  }

  abort(err: Error): void {
    this.aborted ??= err
    this.#ended.resolve(undefined)
  }

  acks(): number[] {
    return this.sent.flatMap((f) => (f.t === 'ack' ? [f.seq] : []))
  }
}

export async function enroll(store: FleetStore, name: string, key: PrivateKey): Promise<void> {
  await store.enrollMachine({
    name,
    peerId: key.toPeerId().toString(),
    publicKey: key.publicKey.toString(),
    tags: ['lab'],
    facts: {},
    nonce: randomBytes(16).toString('hex'),
    at: Date.now(),
  })
}

/** A status frame carrying `machine`'s report `seq`, signed by `key`. */
export function statusFrame(machine: string, seq: number, key: PrivateKey): Uint8Array {
  return encodeMessage(controlFrameSchema, { t: 'status', envelope: reportEnvelope(machine, seq, key) })
}

export function reportEnvelope(machine: string, seq: number, key: PrivateKey): Uint8Array {
  const report = sampleStatus({ machine, seq, state: 'idle', timestamp: 1_700_000_000_000 + seq })
  return sealEnvelope(statusReportSchema, DOMAINS.status, report, key)
}

/** Runs the coordinator's side of the stream; resolves (or rejects) when the coordinator is done with it. */
export function serve(control: ControlService, fs: ScriptedStream, key: PrivateKey): Promise<void> {
  const connection = {
    remotePeer: { toString: () => key.toPeerId().toString() },
    remoteAddr: multiaddr('/ip4/127.0.0.1/tcp/1'),
  }
  return control.handle(fs as unknown as FramedStream, connection as unknown as Connection)
}
