// The list of all a host's connections (net/connection-list.ts replaces libp2p's,
// which was quadratic in the number of peers): every open connection, each once,
// whoever holds several, and still per peer when asked for one. Real hosts on loopback.
import { afterEach, describe, expect, it } from 'vitest'
import type { FleetHost } from '../../net/index.ts'
import { loopbackHosts } from '../agent/hosts.ts'

const { host, stopAll } = loopbackHosts()
afterEach(() => stopAll())

describe("a host's connections", () => {
  it('lists every open connection once, and per peer when asked for one', async () => {
    const coordinator = await host('coordinator')
    const agents = await Promise.all([1, 2, 3].map(() => host('agent')))
    const tcp = coordinator.getMultiaddrs().find((a) => a.toString().includes('/tcp/')) ?? []
    const quic = coordinator.getMultiaddrs().find((a) => a.toString().includes('/quic-v1')) ?? []
    const [a0, a1, a2] = agents as [FleetHost, FleetHost, FleetHost]
    // the coordinator's side of a connection opens a moment after the dialer's
    let opened = 0
    const allOpen = new Promise<void>((resolve) =>
      coordinator.addEventListener('connection:open', () => {
        if (++opened === 4) resolve()
      }),
    )
    for (const a of agents) await a.dial(tcp)
    // a second connection from one agent: a peer with two is listed with both
    await a0.dial(quic, { force: true })
    await allOpen
    const seen = coordinator.getConnections()
    const peers = (list: { toString(): string }[]) => list.map(String).sort()
    expect(peers(seen.map((c) => c.remotePeer))).toEqual(peers([a0.peerId, a0.peerId, a1.peerId, a2.peerId]))
    expect(new Set(seen.map((c) => c.id)).size).toBe(seen.length)
    expect(coordinator.getConnections(a0.peerId)).toHaveLength(2)
    expect(coordinator.getConnections(a1.peerId)).toHaveLength(1)
  })
})
