// The agent's link sends a running update's output (`update-log` frames) only
// to a coordinator whose hello names the capability: an older coordinator
// would drop the link over a frame type it does not know. A fake coordinator
// on a real libp2p host answers the hello with or without it, then pings: the
// first frame after the chunk was handed over shows whether it went out.
import { afterEach, describe, expect, it } from 'vitest'
import { CoordinatorLink } from '../../agent/link.ts'
import {
  type ControlFrame,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  type FramedStream,
  handleFramed,
  MAX_ENVELOPE_BYTES,
  PROTOCOLS,
  UPDATE_LOG_CAPABILITY,
  WIRE_VERSION,
} from '../../protocol/index.ts'
import { loopbackHosts } from './hosts.ts'

const { host, stopAll } = loopbackHosts()
const links: CoordinatorLink[] = []

afterEach(async () => {
  for (const link of links.splice(0)) await link.stop()
  await stopAll()
})

/** The next frame from the agent other than its keepalive pings. */
async function nextFrame(fs: FramedStream): Promise<ControlFrame | undefined> {
  while (true) {
    const bytes = await fs.read()
    if (bytes === undefined) return undefined
    const frame = decodeControlFrame(bytes, MAX_ENVELOPE_BYTES + 4096)
    if ('unknown' in frame) throw new Error(`agent sent an unknown "${frame.unknown}" frame`)
    if (frame.t !== 'ping') return frame
  }
}

/**
 * A fake coordinator naming `capabilities` in its hello; once the link is up,
 * the chunk is handed to it, and the next frame the agent sends is returned.
 */
async function frameAfterChunk(capabilities: string[]): Promise<ControlFrame | undefined> {
  const coordinator = await host('coordinator')
  let link: CoordinatorLink | undefined
  const seen = new Promise<ControlFrame | undefined>((resolve, reject) => {
    void handleFramed(
      coordinator,
      PROTOCOLS.control,
      async (fs) => {
        try {
          await fs.read() // the agent's hello
          const reply: ControlFrame = {
            t: 'hello',
            wire: WIRE_VERSION,
            role: 'coordinator',
            software: 'fleetmesh/test',
            capabilities,
          }
          await fs.send(encodeMessage(controlFrameSchema, reply))
          await link?.whenConnected()
          link?.sendUpdateLog({ manifestId: 'c'.repeat(32), offset: 0, text: 'activating…\n' })
          await fs.send(encodeMessage(controlFrameSchema, { t: 'ping', nonce: 77 }))
          resolve(await nextFrame(fs))
        } catch (err) {
          reject(err)
        }
      },
      { maxFrameBytes: MAX_ENVELOPE_BYTES + 4096 },
    )
  })
  link = new CoordinatorLink({
    host: await host('agent'),
    coordinator: coordinator.peerId,
    coordinatorAddrs: coordinator.getMultiaddrs(),
    machine: 'edge-1',
    queue: { pending: async () => [], ack: async () => {} },
    onManifest: () => {},
    backoffInitialMs: 60_000,
  })
  links.push(link)
  link.start()
  return seen
}

describe("the agent's link and update-log frames", () => {
  it('sends a chunk to a coordinator that names the capability', async () => {
    expect(await frameAfterChunk([UPDATE_LOG_CAPABILITY])).toEqual({
      t: 'update-log',
      manifestId: 'c'.repeat(32),
      offset: 0,
      text: 'activating…\n',
    })
  })

  it('drops it for a coordinator that does not', async () => {
    expect(await frameAfterChunk([])).toEqual({ t: 'pong', nonce: 77 })
  })
})
