/**
 * A peer that gets its answer but never closes its side of the stream cannot
 * keep the stream (and so the connection, which is closed only once idle) open:
 * the coordinator resets it a grace period after answering. Real coordinator,
 * a real libp2p peer with no certificate.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type RunningCoordinator, startCoordinator } from '../../coordinator/daemon.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let coordinator: RunningCoordinator
let peer: FleetHost

beforeEach(async () => {
  fleet = await TestFleet.create()
  coordinator = await startCoordinator({
    stateDir: fleet.coordState,
    listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
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

describe('a peer that keeps its side of an answered stream open', () => {
  it('has the stream reset by the coordinator', async () => {
    const stream = await peer.dialProtocol(coordinator.host.peerId, PROTOCOLS.admin)
    const closed = new Promise<string>((resolve) => {
      stream.addEventListener('close', () => resolve(stream.status), { once: true })
    })
    const fs = new FramedStream(stream, { maxFrameBytes: 1 << 20 })
    await fs.send(new TextEncoder().encode('not a signed admin request'))
    // the refusal arrives and the coordinator ends its side; ours stays open on purpose
    expect(await fs.readOne()).toBeInstanceOf(Uint8Array)
    expect(await fs.read()).toBeUndefined()
    expect(['reset', 'aborted', 'closed']).toContain(await closed)
  }, 60_000)
})
