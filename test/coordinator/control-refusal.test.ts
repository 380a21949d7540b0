/**
 * A peer that is not an enrolled machine is refused on its control stream at
 * once, by its peer id, without the coordinator waiting for its first frame
 * (the agent idle timeout, here set far beyond the test's own timeout).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type RunningCoordinator, startCoordinator } from '../../coordinator/daemon.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { decodeMessage } from '../../protocol/codec.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { controlFrameSchema } from '../../protocol/messages.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let coordinator: RunningCoordinator
let peer: FleetHost

beforeEach(async () => {
  fleet = await TestFleet.create()
  coordinator = await startCoordinator({
    stateDir: fleet.coordState,
    listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
    idleTimeoutMs: 10 * 60_000,
  })
  peer = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519'), listen: [] })
  await peer.peerStore.merge(coordinator.host.peerId, {
    multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
  })
})
afterEach(async () => {
  await peer.stop()
  await coordinator.stop()
  await fleet.stop()
})

describe('control stream from an unenrolled peer', () => {
  it('is refused before the peer sends anything, and closed', async () => {
    const stream = await peer.dialProtocol(coordinator.host.peerId, PROTOCOLS.control)
    const fs = new FramedStream(stream, { maxFrameBytes: 1 << 20 })
    // sends nothing: the refusal must not wait for a hello
    const reply = decodeMessage(controlFrameSchema, await fs.readOne(), 'reply', 1 << 20)
    expect(reply).toMatchObject({
      t: 'error',
      error: { code: 'not-enrolled', message: expect.stringContaining(peer.peerId.toString()) },
    })
    expect(await fs.read()).toBeUndefined()
  })
})
