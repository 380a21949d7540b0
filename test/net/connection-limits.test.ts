/**
 * What one remote peer can make a coordinator hold, over real TCP connections:
 * a per-peer connection cap, pruning of superseded connections whose work grows
 * linearly (not quadratically) with a peer's connections, and inbound
 * connections closed once they carry no stream for a while.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import { startCoordinator } from '../../coordinator/daemon.ts'
import { createHost, FLEETMESH_DHT_PROTOCOL, type FleetHost, type HostInit } from '../../net/host.ts'
import { pruneSupersededConnections } from '../../net/relay-probe.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { waitFor } from '../agent/fixtures.ts'

const PING = '/ipfs/ping/1.0.0'
const cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

async function host(init: Omit<HostInit, 'privateKey'>): Promise<FleetHost> {
  const h = await createHost({ ...init, privateKey: await generateKeyPair('Ed25519') })
  cleanup.push(async () => {
    await h.stop()
  })
  return h
}

const openTo = (h: FleetHost, peer: FleetHost) =>
  h.getConnections(peer.peerId).filter((c) => c.status === 'open')

/** `count` connections from `from` to `to`, one after the other; the ones refused are left out. */
async function connectMany(from: FleetHost, addr: string, count: number): Promise<Connection[]> {
  const opened: Connection[] = []
  for (let i = 0; i < count; i++) {
    const conn = await from.dial(multiaddr(addr), { force: true }).catch(() => undefined)
    if (conn !== undefined) opened.push(conn)
  }
  return opened
}

describe('connections from one peer', () => {
  it('a real coordinator keeps at most 8 of them', async () => {
    const fleet = await TestFleet.create()
    cleanup.push(() => fleet.stop())
    const running = await startCoordinator({
      stateDir: fleet.coordState,
      listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
    })
    cleanup.push(() => running.stop())
    const peer = await host({ role: 'admin', listen: [] })
    await connectMany(peer, `/ip4/127.0.0.1/tcp/${fleet.port}/p2p/${running.host.peerId}`, 20)
    const kept = openTo(running.host, peer).length
    expect(kept).toBeGreaterThan(0)
    expect(kept).toBeLessThanOrEqual(8)
  })

  it('are probed for being superseded with work linear in their number', async () => {
    const n = 40
    const server = await host({
      role: 'coordinator',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      maxConnectionsPerPeer: 100,
    })
    const rounds: number[] = []
    const lastRound = Promise.withResolvers<void>()
    const unprune = pruneSupersededConnections(server, {
      probeTimeoutMs: 1_000,
      onRound: (probed) => {
        rounds.push(probed)
        if (probed === n - 1) lastRound.resolve()
      },
    })
    cleanup.push(async () => unprune())
    const peer = await host({ role: 'admin', listen: [] })
    // the peer answers the probes, and counts them
    let pings = 0
    const ping = peer.services.ping as unknown as { handlePing(s: Stream, c: Connection): Promise<void> }
    await peer.unhandle(PING)
    await peer.handle(PING, (stream, connection) => {
      pings++
      return ping.handlePing(stream, connection)
    })
    const opened = await connectMany(peer, server.getMultiaddrs()[0]!.toString(), n)
    expect(opened).toHaveLength(n)
    // a round that started once all n were open has probed the n - 1 older ones
    await lastRound.promise
    // one probe per older connection per round, and few rounds: n(n-1)/2 = 780 before
    expect(rounds.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(4 * n)
    expect(pings).toBeLessThanOrEqual(4 * n)
    expect(openTo(server, peer)).toHaveLength(n)
  })
})

describe('peers that disconnect', () => {
  it("leave no record in a real coordinator's peer store", async () => {
    const fleet = await TestFleet.create()
    cleanup.push(() => fleet.stop())
    const running = await startCoordinator({
      stateDir: fleet.coordState,
      listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
    })
    cleanup.push(() => running.stop())
    const addr = multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}/p2p/${running.host.peerId}`)
    const peers: FleetHost[] = []
    for (let i = 0; i < 5; i++) {
      const peer = await createHost({
        role: 'admin',
        privateKey: await generateKeyPair('Ed25519'),
        listen: [],
      })
      await peer.dial(addr)
      // identify has run: the coordinator holds the peer's record
      await waitFor(
        async () =>
          ((await running.host.peerStore.get(peer.peerId).catch(() => undefined))?.protocols.length ?? 0) > 0,
        'identify',
      )
      peers.push(peer)
    }
    for (const peer of peers) await peer.stop()
    await waitFor(async () => (await running.host.peerStore.all()).length === 0, 'the records to go')
  })

  it('leave no record after speaking the DHT protocol to it, as the routing table did not take them', async () => {
    const fleet = await TestFleet.create()
    cleanup.push(() => fleet.stop())
    const running = await startCoordinator({
      stateDir: fleet.coordState,
      listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
    })
    cleanup.push(() => running.stop())
    const addr = multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}/p2p/${running.host.peerId}`)
    // a stranger with a fresh key: the DHT stream makes the coordinator note that it speaks kad
    const peer = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519'), listen: [] })
    const stream = await peer.dialProtocol(addr, FLEETMESH_DHT_PROTOCOL)
    await waitFor(
      async () =>
        ((await running.host.peerStore.get(peer.peerId).catch(() => undefined))?.protocols ?? []).includes(
          FLEETMESH_DHT_PROTOCOL,
        ),
      'the coordinator to record the DHT protocol',
    )
    stream.abort(new Error('done'))
    // a DHT client is not a routing-table peer, so nothing tags it
    expect((await running.host.peerStore.get(peer.peerId)).tags.size).toBe(0)
    await peer.stop()
    await waitFor(async () => !(await running.host.peerStore.has(peer.peerId)), 'the record to go')
  })
})

describe('idle inbound connections', () => {
  it('are closed when they carry no stream; one with a stream stays', async () => {
    const server = await host({
      role: 'coordinator',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      idleConnectionTimeoutMs: 300,
    })
    await server.handle('/test/hold/1', () => {}) // holds the stream open: the handler never closes it
    const addr = server.getMultiaddrs()[0]!
    const busy = await host({ role: 'admin', listen: [] })
    const held = await busy.dialProtocol(addr, '/test/hold/1')
    const idle = await host({ role: 'admin', listen: [] })
    const closed = new Promise<void>((resolve) =>
      idle.addEventListener('peer:disconnect', () => resolve(), { once: true }),
    )
    await idle.dial(addr)
    await closed
    expect(openTo(server, idle)).toHaveLength(0)
    expect(openTo(server, busy)).toHaveLength(1)
    expect(held.status).toBe('open')
  })
})
