// Two pings at once on one connection: libp2p's connection monitor pings on its
// own schedule, and fleetmesh pings too (relay probes, doctor, the benches).
// With libp2p's default of one outbound ping stream per connection the second
// failed with TooManyOutboundProtocolStreamsError, which agents counted as a
// failed link try during failover and which stopped `npm run bench:nat`.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterEach, describe, expect, it } from 'vitest'
import { createHost, type FleetHost } from '../../net/index.ts'

const hosts: FleetHost[] = []
afterEach(async () => {
  for (const h of hosts.splice(0)) await h.stop()
})

describe('ping', () => {
  it('runs two pings at once on one connection', async () => {
    for (const role of ['coordinator', 'agent'] as const)
      hosts.push(
        await createHost({
          role,
          privateKey: await generateKeyPair('Ed25519'),
          listen: ['/ip4/127.0.0.1/tcp/0'],
        }),
      )
    const [coordinator, agent] = hosts as [FleetHost, FleetHost]
    const conn = await agent.dial(coordinator.getMultiaddrs()[0] ?? [])
    const rtts = await Promise.all(
      [1, 2].map(() => agent.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(10_000) })),
    )
    expect(rtts).toHaveLength(2)
    expect(agent.getConnections(coordinator.peerId)).toHaveLength(1)
  })
})
