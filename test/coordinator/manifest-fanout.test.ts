/**
 * The push of a newly desired manifest to connected agents (ControlService.pushDesired):
 * one store read and one encoded frame for every machine that shares a manifest, no
 * session waiting on another's send, and no manifest to an agent still being
 * greeted before the tag record it checks the manifest against.
 *
 * The control streams are stand-ins: the sessions go through the real handshake
 * against a real (in-memory) store, without libp2p underneath.
 */

import { randomBytes } from 'node:crypto'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ControlService } from '../../coordinator/control.ts'
import { FleetEvents } from '../../coordinator/events.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { FleetStore } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { type ControlFrame, decodeControlFrame, type FramedStream } from '../../protocol/index.ts'
import { sampleManifest } from '../../testkit/fixtures.ts'
import { manifestRecord } from '../../testkit/manifest-record.ts'
import { agentHello } from './ingest-stream.ts'

const admin = PrivateKey.generate()

/** A control stream as the coordinator sees it: the agent's hello, then silence until it ends. */
class StandInStream {
  readonly sent: Uint8Array[] = []
  /** Sends wait for this (a stalled peer: one that never settles) … */
  gate: Promise<void> | undefined
  /** … or fail (a dead peer). */
  failing = false
  readonly serving = Promise.withResolvers<void>()
  readonly firstSend = Promise.withResolvers<void>()
  readonly #hello: Uint8Array
  readonly #ended = Promise.withResolvers<undefined>()
  #reads = 0

  constructor(machine: string) {
    this.#hello = agentHello(machine)
  }

  async read(): Promise<Uint8Array | undefined> {
    if (this.#reads++ === 0) return this.#hello
    this.serving.resolve() // the handshake is over: the coordinator waits for the agent's frames
    return this.#ended.promise
  }

  async send(frame: Uint8Array): Promise<void> {
    this.sent.push(frame)
    this.firstSend.resolve()
    await this.gate
    if (this.failing) throw new Error('stream reset by the peer')
  }

  abort(): void {
    this.#ended.resolve(undefined)
  }

  frames(): ControlFrame[] {
    return this.sent.map((bytes) => decodeControlFrame(bytes, 1 << 20) as ControlFrame)
  }
}

let store: FleetStore
let control: ControlService
let streams: Map<string, StandInStream>
let handlers: Promise<void>[]

beforeEach(async () => {
  store = await openSqliteStore(':memory:')
  control = new ControlService({ store, events: new FleetEvents(), idleTimeoutMs: 600_000, log: () => {} })
  streams = new Map()
  handlers = []
})
afterEach(async () => {
  for (const fs of streams.values()) fs.abort()
  await Promise.allSettled(handlers)
  await store.close()
})

async function enroll(name: string): Promise<string> {
  const key = PrivateKey.generate()
  const peerId = key.toPeerId().toString()
  await store.enrollMachine({
    name,
    peerId,
    publicKey: key.publicKey.toString(),
    tags: ['lab'],
    facts: {},
    nonce: randomBytes(16).toString('hex'),
    at: Date.now(),
  })
  return peerId
}

/** Starts the coordinator's side of the machine's control stream; `serving` once it is greeted. */
function connect(name: string, peerId: string): StandInStream {
  const fs = new StandInStream(name)
  streams.set(name, fs)
  const connection = { remotePeer: { toString: () => peerId }, remoteAddr: multiaddr('/ip4/127.0.0.1/tcp/1') }
  handlers.push(control.handle(fs as unknown as FramedStream, connection as unknown as Connection))
  return fs
}

async function submit(sequence: number, machines: string[]): Promise<string> {
  const manifest = sampleManifest({ sequence, targets: { machines, tags: [] } })
  const record = manifestRecord(manifest, admin)
  await store.addManifest(record, machines)
  return manifest.id
}

async function connectAll(count: number): Promise<string[]> {
  const names = Array.from({ length: count }, (_, i) => `edge-${i}`)
  for (const name of names) connect(name, await enroll(name))
  await Promise.all([...streams.values()].map((fs) => fs.serving.promise))
  return names
}

/** The types of the frames the coordinator sent the machine, in order. */
function kinds(name: string): string[] {
  const frames = streams.get(name)?.frames() ?? []
  return frames.map((f) => f.t)
}

describe('pushing a newly desired manifest', () => {
  it('reads the store once and encodes the frame once for every machine sharing the manifest', async () => {
    const names = await connectAll(20)
    await submit(8, names)
    const one = vi.spyOn(store, 'getDesired')
    const many = vi.spyOn(store, 'getDesiredMany')
    await control.pushDesired([...names, 'edge-offline'])
    expect([one.mock.calls.length, many.mock.calls.length]).toEqual([0, 1])
    const pushed = names.map((name) => streams.get(name)?.sent.at(-1))
    const frame = pushed[0] as Uint8Array
    expect(decodeControlFrame(frame, 1 << 20)).toMatchObject({ t: 'manifest' })
    // The very same bytes to each session: encoded once, not once per machine.
    for (const bytes of pushed) expect(bytes).toBe(frame)
  })

  it('sends to every other session while one never finishes its send and another fails', async () => {
    const names = await connectAll(5)
    await submit(8, names)
    const stalled = streams.get('edge-0') as StandInStream
    const dead = streams.get('edge-1') as StandInStream
    stalled.gate = new Promise(() => {})
    dead.failing = true
    await control.pushDesired(names)
    for (const name of names) expect(kinds(name)).toEqual(['hello', 'manifest'])
    // The stalled session does not hold up the next submit for the others either.
    await submit(9, names.slice(2))
    await control.pushDesired(names)
    for (const name of names.slice(2)) expect(kinds(name)).toEqual(['hello', 'manifest', 'manifest'])
  })

  it('reaches an agent still being greeted only after its tag record, and once', async () => {
    const peerId = await enroll('edge-0')
    const envelope = new Uint8Array(randomBytes(64))
    await store.machineTags.apply([
      {
        machine: 'edge-0',
        from: ['lab'],
        tags: ['lab', 'web'],
        version: 1,
        envelope,
        signedBy: 'test',
        at: 1,
      },
    ])
    const fs = connect('edge-0', peerId)
    const hello = Promise.withResolvers<void>()
    fs.gate = hello.promise // the hello does not go out yet: the handshake waits on it
    await fs.firstSend.promise
    await submit(8, ['edge-0'])
    await control.pushDesired(['edge-0'])
    hello.resolve()
    await fs.serving.promise
    expect(kinds('edge-0')).toEqual(['hello', 'machine-tags', 'manifest'])
  })
})
