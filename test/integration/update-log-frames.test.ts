/**
 * `update-log` frames from a rogue agent: an enrolled machine's key speaking
 * the control protocol by hand to a real coordinator process. The coordinator
 * announces that it takes the frames; one that is malformed or too big (over a
 * chunk, or running past the update log's bound) resets the stream like any
 * bad frame, while a well-formed one (here about no current update, so it is
 * dropped) leaves the link up. The stream's state is read with a ping: a pong
 * comes back only on a stream that is still open.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { encodeCanonical } from '../../keys/index.ts'
import {
  type ControlFrame,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  FramedStream,
  MAX_ENVELOPE_BYTES,
  MAX_REPORT_LOG,
  MAX_UPDATE_LOG_CHUNK,
  PROTOCOLS,
  UPDATE_LOG_CAPABILITY,
  WIRE_VERSION,
} from '../../protocol/index.ts'
import { type EnrolledHost, enrolledHost } from '../../testkit/enrolled-host.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let rogue: EnrolledHost

beforeEach(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  rogue = await enrolledHost(fleet, 'rogue', ['lab'], fleet.dir)
})
afterEach(async () => {
  await rogue.host.stop()
  await fleet.stop()
})

const MAX_FRAME = MAX_ENVELOPE_BYTES + 4096
const manifestId = 'ab'.repeat(16)

/** A control stream past the hello exchange; resolves with it and the coordinator's hello. */
async function connect(): Promise<{ fs: FramedStream; hello: ControlFrame }> {
  const coordinator = peerIdFromString(rogue.coordinator)
  await rogue.host.peerStore.merge(coordinator, {
    multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
  })
  const stream = await rogue.host.dialProtocol(coordinator, PROTOCOLS.control)
  const fs = new FramedStream(stream, { maxFrameBytes: MAX_FRAME })
  const hello: ControlFrame = {
    t: 'hello',
    wire: WIRE_VERSION,
    role: 'agent',
    software: 'fleetmesh-agent/rogue',
    capabilities: [],
    machine: 'rogue',
  }
  await fs.send(encodeMessage(controlFrameSchema, hello))
  const reply = decodeControlFrame((await fs.read()) as Uint8Array, MAX_FRAME)
  if ('unknown' in reply) throw new Error('expected the coordinator hello')
  return { fs, hello: reply }
}

/** Sends a ping; true if its pong comes back, false if the stream ends or is reset first. */
async function answersPing(fs: FramedStream, nonce: number): Promise<boolean> {
  try {
    await fs.send(encodeMessage(controlFrameSchema, { t: 'ping', nonce }))
    while (true) {
      const bytes = await fs.read({ timeoutMs: 20_000 })
      if (bytes === undefined) return false
      const frame = decodeControlFrame(bytes, MAX_FRAME)
      if (!('unknown' in frame) && frame.t === 'pong' && frame.nonce === nonce) return true
    }
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') throw err
    return false
  }
}

describe('update-log frames on the control stream', () => {
  it('the coordinator names the capability, and a well-formed frame leaves the link up', async () => {
    const { fs, hello } = await connect()
    expect(hello.t === 'hello' && hello.capabilities).toContain(UPDATE_LOG_CAPABILITY)
    await fs.send(encodeCanonical({ t: 'update-log', manifestId, offset: 0, text: 'hello from no update\n' }))
    expect(await answersPing(fs, 1)).toBe(true)
  })

  it.each([
    ['a chunk over the limit', { manifestId, offset: 0, text: 'x'.repeat(MAX_UPDATE_LOG_CHUNK + 1) }],
    [
      'a chunk over the limit in bytes',
      { manifestId, offset: 0, text: 'é'.repeat(MAX_UPDATE_LOG_CHUNK / 2 + 1) },
    ],
    [
      'a chunk past the end of the live log',
      { manifestId, offset: MAX_REPORT_LOG - 10, text: 'y'.repeat(11) },
    ],
    ['an offset past the end', { manifestId, offset: MAX_REPORT_LOG + 1, text: 'z' }],
    ['a negative offset', { manifestId, offset: -1, text: 'z' }],
    ['no text', { manifestId, offset: 0, text: '' }],
    ['a bad manifest id', { manifestId: 'not-an-id', offset: 0, text: 'z' }],
    ['an extra field', { manifestId, offset: 0, text: 'z', secret: true }],
  ])('%s resets the stream', async (_what, fields) => {
    const { fs } = await connect()
    await fs.send(encodeCanonical({ t: 'update-log', ...fields }))
    expect(await answersPing(fs, 2)).toBe(false)
  })
})
