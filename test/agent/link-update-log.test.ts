// The agent's link sends a running update's output (`update-log` frames) only
// to a coordinator whose hello names the capability: an older coordinator
// would drop the link over a frame type it does not know. A fake coordinator
// on a real libp2p host answers the hello with or without it, then pings: the
// first frame after the chunk was handed over shows whether it went out.
import { afterEach, describe, expect, it } from 'vitest'
import type { CoordinatorLink } from '../../agent/link.ts'
import {
  type ControlFrame,
  controlFrameSchema,
  encodeMessage,
  UPDATE_LOG_CAPABILITY,
} from '../../protocol/index.ts'
import { fakeCoordinator, linkTo, nextFrame } from './fake-coordinator.ts'
import { loopbackHosts } from './hosts.ts'

const { host, stopAll } = loopbackHosts()
const links: CoordinatorLink[] = []

afterEach(async () => {
  for (const link of links.splice(0)) await link.stop()
  await stopAll()
})

/**
 * A fake coordinator naming `capabilities` in its hello; once the link is up,
 * the chunk is handed to it, and the next frame the agent sends is returned.
 */
async function frameAfterChunk(capabilities: string[]): Promise<ControlFrame | undefined> {
  let link: CoordinatorLink | undefined
  const { result, coordinator } = await fakeCoordinator(
    host,
    async (fs) => {
      await link?.whenConnected()
      link?.sendUpdateLog({ manifestId: 'c'.repeat(32), offset: 0, text: 'activating…\n' })
      await fs.send(encodeMessage(controlFrameSchema, { t: 'ping', nonce: 77 }))
      return await nextFrame(fs)
    },
    { software: 'fleetmesh/test', capabilities },
  )
  link = linkTo(await host('agent'), coordinator)
  links.push(link)
  link.start()
  return result
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
