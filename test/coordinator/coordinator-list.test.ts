/**
 * The fleet root's signed list of the fleet's coordinators: only the root's
 * signature for this fleet opens, and the coordinator hands it to agents that
 * ask for it in their hello (and only to them: an older agent drops its link on
 * a frame type it does not expect), again when a newer list is stored.
 */
import { randomBytes } from 'node:crypto'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ControlService } from '../../coordinator/control.ts'
import { FleetEvents } from '../../coordinator/events.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { FleetStore } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import {
  COORDINATOR_LIST_CAPABILITY,
  type ControlFrame,
  type CoordinatorList,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  type FramedStream,
  openCoordinatorList,
  signCoordinatorList,
  WIRE_VERSION,
} from '../../protocol/index.ts'

const root = PrivateKey.generate()
const fleet = { fleetRoot: root.publicKey, fleetId: 'acme' }
const entry = () => ({
  peerId: PrivateKey.generate().toPeerId().toString(),
  addrs: ['/ip4/127.0.0.1/tcp/4001'],
})
const list = (version: number, coordinators = [entry()]): CoordinatorList => ({
  fleetId: 'acme',
  version,
  issuedAt: Date.now(),
  coordinators,
})

describe('the signed coordinator list', () => {
  it("opens only with the fleet root's signature, for this fleet, naming each coordinator once", () => {
    const good = list(2, [entry(), entry()])
    expect(openCoordinatorList(signCoordinatorList(root, good), fleet)).toEqual(good)
    const admin = PrivateKey.generate()
    expect(() => openCoordinatorList(signCoordinatorList(admin, good), fleet)).toThrow(
      /not by the fleet root/,
    )
    const other = { ...good, fleetId: 'other' }
    expect(() => openCoordinatorList(signCoordinatorList(root, other), fleet)).toThrow(/for fleet "other"/)
    const twice = entry()
    expect(() => openCoordinatorList(signCoordinatorList(root, list(3, [twice, twice])), fleet)).toThrow(
      /twice/,
    )
    const tampered = signCoordinatorList(root, good)
    tampered[tampered.length - 70] = (tampered[tampered.length - 70] ?? 0) ^ 1
    expect(() => openCoordinatorList(tampered, fleet)).toThrow()
  })
})

/** The agent's side of a control stream: its hello, then silence until it ends. */
class StandInStream {
  readonly sent: Uint8Array[] = []
  readonly serving = Promise.withResolvers<void>()
  readonly #hello: Uint8Array
  readonly #ended = Promise.withResolvers<undefined>()
  #reads = 0

  constructor(machine: string, capabilities: string[]) {
    const hello = { t: 'hello', wire: WIRE_VERSION, role: 'agent', software: 'test', capabilities, machine }
    this.#hello = encodeMessage(controlFrameSchema, hello as ControlFrame)
  }

  async read(): Promise<Uint8Array | undefined> {
    if (this.#reads++ === 0) return this.#hello
    this.serving.resolve()
    return this.#ended.promise
  }

  async send(frame: Uint8Array): Promise<void> {
    this.sent.push(frame)
  }

  abort(): void {
    this.#ended.resolve(undefined)
  }

  frames(): ControlFrame[] {
    return this.sent.map((bytes) => decodeControlFrame(bytes, 1 << 20) as ControlFrame)
  }
}

describe('the coordinator list on the control stream', () => {
  let store: FleetStore
  let current: Uint8Array | undefined
  let control: ControlService
  const streams: StandInStream[] = []
  const handlers: Promise<void>[] = []

  beforeEach(async () => {
    store = await openSqliteStore(':memory:')
    current = signCoordinatorList(root, list(1))
    control = new ControlService({
      store,
      events: new FleetEvents(),
      idleTimeoutMs: 600_000,
      log: () => {},
      coordinatorList: () => current,
    })
  })
  afterEach(async () => {
    for (const fs of streams.splice(0)) fs.abort()
    await Promise.allSettled(handlers.splice(0))
    await store.close()
  })

  async function connect(name: string, capabilities: string[]): Promise<StandInStream> {
    const key = PrivateKey.generate()
    const peerId = key.toPeerId().toString()
    const nonce = randomBytes(16).toString('hex')
    await store.enrollMachine({
      name,
      peerId,
      publicKey: key.publicKey.toString(),
      tags: [],
      facts: {},
      nonce,
      at: 0,
    })
    const fs = new StandInStream(name, capabilities)
    streams.push(fs)
    const connection = {
      remotePeer: { toString: () => peerId },
      remoteAddr: multiaddr('/ip4/127.0.0.1/tcp/1'),
    }
    handlers.push(control.handle(fs as unknown as FramedStream, connection as unknown as Connection))
    await fs.serving.promise
    return fs
  }

  const lists = (fs: StandInStream) =>
    fs
      .frames()
      .flatMap((f) => (f.t === 'coordinators' ? [openCoordinatorList(f.envelope, fleet).version] : []))

  it('goes to an agent that asked for it, after the hello, and to no other', async () => {
    const asking = await connect('asking', [COORDINATOR_LIST_CAPABILITY])
    const older = await connect('older', [])
    expect(asking.frames()[0]?.t).toBe('hello')
    expect(lists(asking)).toEqual([1])
    expect(older.frames().map((f) => f.t)).not.toContain('coordinators')
  })

  it('goes out again when a newer list is stored', async () => {
    const asking = await connect('asking', [COORDINATOR_LIST_CAPABILITY])
    const older = await connect('older', [])
    current = signCoordinatorList(root, list(2, [entry(), entry()]))
    control.pushCoordinatorList()
    await Promise.resolve()
    expect(lists(asking)).toEqual([1, 2])
    expect(older.frames().map((f) => f.t)).not.toContain('coordinators')
  })
})
