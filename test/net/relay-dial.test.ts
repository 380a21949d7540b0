// dialThroughRelays (net/relay-dial.ts) on loopback: a coordinator reserved on
// two relays, reached by an agent through whichever relay still answers.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import { createHost, type FleetHost, type HostInit } from '../../net/host.ts'
import { dialThroughRelays, RelayDialError, relayRoutes } from '../../net/relay-dial.ts'
import { transportAccess } from '../../net/reservation-store.ts'
import { ReservationKeeper } from '../../net/reservations.ts'

const hosts: FleetHost[] = []
const keepers: ReservationKeeper[] = []

async function start(init: Omit<HostInit, 'privateKey'>): Promise<FleetHost> {
  const host = await createHost({
    listen: ['/ip4/127.0.0.1/tcp/0'],
    ...init,
    privateKey: await generateKeyPair('Ed25519'),
  })
  hosts.push(host)
  return host
}

afterEach(async () => {
  for (const k of keepers.splice(0)) await k.stop()
  for (const host of hosts.splice(0).reverse()) if (host.status === 'started') await host.stop()
})

function direct(host: FleetHost): Multiaddr {
  const addr = host.getMultiaddrs().find((a) => !a.toString().includes('/p2p-circuit'))
  if (addr === undefined) throw new Error('host has no direct listen address')
  return addr
}

/**
 * Two relays and a coordinator holding a reservation on each (kept as the coordinator
 * daemon keeps them); an agent that knows the circuits as identify stores them.
 */
async function twoRelays() {
  const relays = [await start({ role: 'relay' }), await start({ role: 'relay' })]
  const transports = transportAccess()
  const coordinator = await start({
    role: 'coordinator',
    extraServices: { fleetmeshTransports: transports.service },
  })
  const reserved = new Set<string>()
  const both = new Promise<void>((resolve) => {
    keepers.push(
      new ReservationKeeper({
        host: coordinator,
        transportManager: transports.get(),
        relays: relays.map((r) => direct(r).toString()),
        onEvent: (e) => {
          if (e.status === 'ok') reserved.add(e.relay)
          if (reserved.size === 2) resolve()
        },
      }),
    )
  })
  keepers.at(-1)?.start()
  await both
  const agent = await start({ role: 'agent', listen: [] })
  // the peer store keeps addresses without the trailing /p2p/<coordinator>
  const circuits = relays.map((r) => multiaddr(`${direct(r)}/p2p-circuit`))
  await agent.peerStore.merge(coordinator.peerId, { multiaddrs: circuits })
  return { relays, coordinator, agent }
}

describe('dialThroughRelays', () => {
  it('groups circuit addresses by relay, in the order first seen', () => {
    const a = '/ip4/198.51.100.9/tcp/4001/p2p/12D3KooWEqqiXEsWxHQW28v26rAU7Hp1B6yGaaLKEkMDRtzs9icz'
    const b = '/ip4/198.51.100.10/tcp/4001/p2p/12D3KooWNA9Mb1mSAns3oo32NK2ZHbRSs7aeQ3vKXD6iv1goTzPv'
    const routes = relayRoutes(
      [`${b}/p2p-circuit`, '/ip4/10.0.0.2/tcp/4001', `${a}/p2p-circuit`, `${b}/p2p-circuit`].map((s) =>
        multiaddr(s),
      ),
    )
    expect(routes.map((r) => [r.relay.toString(), r.circuits.length])).toEqual([
      [b, 1],
      [a, 1],
    ])
  })

  it('reaches the coordinator (not the relay) through the relay that is up when the first one is gone', async () => {
    const { relays, coordinator, agent } = await twoRelays()
    const gone = relays[0]!
    const goneId = gone.peerId.toString()
    await gone.stop()
    const conn = await dialThroughRelays(agent, coordinator.peerId, { signal: AbortSignal.timeout(10_000) })
    expect(conn.remotePeer.equals(coordinator.peerId)).toBe(true)
    expect(conn.remoteAddr.toString()).toContain(`/p2p/${relays[1]!.peerId}/p2p-circuit`)
    expect(conn.remoteAddr.toString()).not.toContain(goneId)
  })

  it('names every relay it tried when none answers', async () => {
    const { relays, coordinator, agent } = await twoRelays()
    for (const r of relays) await r.stop()
    const err = await dialThroughRelays(agent, coordinator.peerId, {
      signal: AbortSignal.timeout(10_000),
    }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(RelayDialError)
    for (const r of relays) expect((err as Error).message).toContain(r.peerId.toString())
  })
})
