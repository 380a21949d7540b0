/**
 * An enrolled machine downloads the archive of its own desired manifest and
 * nothing else: a compromised device cannot fetch the archives signed for other
 * machines by their hash, and the refusal reads like an unknown hash. Real
 * coordinator and agent processes; the second machine is an in-process
 * enrolled identity speaking the blob protocol itself.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadAdminHome } from '../../admin/home.ts'
import { sha256File } from '../../lib/index.ts'
import {
  type BlobResponse,
  blobRequestSchema,
  blobResponseSchema,
  decodeMessage,
  encodeMessage,
  FramedStream,
  PROTOCOLS,
} from '../../protocol/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { enrolledHost } from '../../testkit/enrolled-host.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
const cleanups: (() => Promise<void>)[] = []
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
  await fleet.stop()
})

describe('blob downloads', () => {
  it("serve a machine its desired archive and refuse another machine's", async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['a'], fleet.activationEnv('edge-1'))
    const forEdge1 = await makeArchive(fleet.dir, { version: 'a1' })
    expect((await fleet.deploy(forEdge1, 'tag:a', 'a1', ['--timeout', '60s'])).code).toBe(0)

    const { host } = await enrolledHost(fleet, 'edge-2', ['b'], fleet.dir)
    cleanups.push(async () => {
      await host.stop()
    })
    const coordinator = (await loadAdminHome(fleet.home)).fleet.coordinator.peerId
    const coordinatorId = peerIdFromString(coordinator)
    await host.peerStore.merge(coordinatorId, { multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)] })
    const ask = async (sha256: string): Promise<BlobResponse> => {
      const fs = new FramedStream(await host.dialProtocol(coordinatorId, PROTOCOLS.blob), {
        maxFrameBytes: 1 << 20,
      })
      await fs.send(encodeMessage(blobRequestSchema, { t: 'get', sha256, offset: 0 }))
      const response = decodeMessage(blobResponseSchema, await fs.readOne(), 'blob response', 4096)
      fs.abort(new Error('done'))
      return response
    }

    const edge1Sha = await sha256File(forEdge1)
    expect(await ask(edge1Sha)).toMatchObject({ ok: false, error: { code: 'not-found' } })

    const forEdge2 = await makeArchive(fleet.dir, { version: 'b1' })
    expect((await fleet.deploy(forEdge2, 'tag:b', 'b1', ['--no-watch'])).code).toBe(0)
    expect(await ask(await sha256File(forEdge2))).toMatchObject({ ok: true })
    // edge-1's archive stays out of reach, also now that edge-2 has a desired state
    expect(await ask(edge1Sha)).toMatchObject({ ok: false, error: { code: 'not-found' } })
  }, 120_000)
})
