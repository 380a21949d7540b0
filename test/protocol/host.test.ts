import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import type { FleetHost, HostInit } from '../../net/host.ts'
import { createHost, FLEETMESH_DHT_PROTOCOL } from '../../net/host.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { type FramedHandler, handleFramed } from '../../protocol/framing.ts'

const LOOPBACK = ['/ip4/127.0.0.1/tcp/0']
const ECHO = '/fleetmesh-test/echo/1'

const echo: FramedHandler = async (fs) => {
  for await (const frame of fs) await fs.send(frame)
}

const hosts: FleetHost[] = []

async function start(init: Omit<HostInit, 'privateKey'>): Promise<FleetHost> {
  const host = await createHost({ listen: LOOPBACK, ...init, privateKey: await generateKeyPair('Ed25519') })
  hosts.push(host)
  return host
}

afterEach(async () => {
  // newest first and one at a time: agents go before the relay they use, and
  // connected hosts stopping simultaneously can stall in libp2p's close path
  for (const host of hosts.splice(0).reverse()) await host.stop()
})

function firstAddr(host: FleetHost): Multiaddr {
  const addr = host.getMultiaddrs().find((a) => !a.toString().includes('/p2p-circuit'))
  if (addr === undefined) throw new Error('host has no direct listen address')
  return addr
}

function circuitAddr(host: FleetHost): Multiaddr {
  const addr = host.getMultiaddrs().find((a) => a.toString().includes('/p2p-circuit'))
  if (addr === undefined) throw new Error('host has no relayed address')
  return addr
}

/** Resolves with the first connection to `peer` that closes */
function connectionClosed(host: FleetHost, peer: PeerId): Promise<Connection> {
  return new Promise((resolve) => {
    const onClose = (evt: CustomEvent<Connection>): void => {
      if (!evt.detail.remotePeer.equals(peer)) return
      host.removeEventListener('connection:close', onClose)
      resolve(evt.detail)
    }
    host.addEventListener('connection:close', onClose)
  })
}

describe('createHost', () => {
  it('connects two hosts over loopback TCP; they ping and run the private DHT in the right modes', async () => {
    const coordinator = await start({ role: 'coordinator' })
    const agent = await start({ role: 'agent' })

    const conn = await agent.dial(firstAddr(coordinator))
    expect(conn.remotePeer.equals(coordinator.peerId)).toBe(true)
    expect(conn.encryption).toBe('/noise')
    expect(conn.multiplexer).toBe('/yamux/1.0.0')

    expect(await agent.services.ping.ping(coordinator.peerId)).toBeGreaterThanOrEqual(0)
    expect(await coordinator.services.ping.ping(agent.peerId)).toBeGreaterThanOrEqual(0)

    expect(coordinator.services.dht.getMode()).toBe('server')
    expect(agent.services.dht.getMode()).toBe('client')
    expect(coordinator.getProtocols()).toContain(FLEETMESH_DHT_PROTOCOL)
    expect(coordinator.getProtocols()).not.toContain('/ipfs/kad/1.0.0')
    expect(agent.getProtocols()).not.toContain(FLEETMESH_DHT_PROTOCOL)

    // identify told the agent what the coordinator speaks
    const peer = await agent.peerStore.get(coordinator.peerId)
    expect(peer.protocols).toContain(FLEETMESH_DHT_PROTOCOL)
  })

  it('gives each role its defaults', async () => {
    const admin = await start({ role: 'admin', listen: undefined })
    expect(admin.getMultiaddrs()).toEqual([])
    expect(admin.services.relay).toBeUndefined()
    expect(admin.services.dht.getMode()).toBe('client')

    const agent = await start({ role: 'agent', announce: ['/ip4/203.0.113.7/tcp/4001'] })
    expect(agent.services.relay).toBeUndefined()
    expect(agent.getMultiaddrs().map(String)).toEqual([`/ip4/203.0.113.7/tcp/4001/p2p/${agent.peerId}`])

    const relay = await start({ role: 'relay' })
    expect(relay.services.relay).toBeDefined()
    expect(relay.services.dht.getMode()).toBe('server')
  })

  it('dials its bootstrap peers at start-up', async () => {
    const coordinator = await start({ role: 'coordinator' })
    const agent = await start({ role: 'agent', bootstrap: [firstAddr(coordinator).toString()] })
    if (agent.getConnections(coordinator.peerId).length === 0) {
      await new Promise<void>((resolve) => {
        const onConnect = (evt: CustomEvent<PeerId>): void => {
          if (!evt.detail.equals(coordinator.peerId)) return
          agent.removeEventListener('peer:connect', onConnect)
          resolve()
        }
        agent.addEventListener('peer:connect', onConnect)
      })
    }
    expect(agent.getConnections(coordinator.peerId)).toHaveLength(1)
  })

  it('rejects inputs that cannot work, before starting anything', async () => {
    const key = await generateKeyPair('Ed25519')
    await expect(
      createHost({ role: 'agent', privateKey: key, relay: { maxReservations: 1 } }),
    ).rejects.toThrow(/only coordinator and relay hosts run a relay server/)
    await expect(
      createHost({ role: 'relay', privateKey: key, listen: LOOPBACK, relay: { durationLimitMs: 2 ** 31 } }),
    ).rejects.toThrow(RangeError)
    await expect(
      createHost({ role: 'agent', privateKey: key, bootstrap: ['/ip4/127.0.0.1/tcp/4001'] }),
    ).rejects.toThrow(/must end in \/p2p\//)
    await expect(
      createHost({ role: 'agent', privateKey: await generateKeyPair('secp256k1') }),
    ).rejects.toThrow(/Ed25519/)
  })
})

describe('circuit relay', () => {
  it('serves reservations with the operator limits, and refuses them beyond maxReservations', async () => {
    const relay = await start({
      role: 'relay',
      relay: {
        maxReservations: 1,
        dataLimitBytes: 65_536,
        durationLimitMs: 60_000,
        reservationTtlMs: 600_000,
      },
    })
    const relayAddr = firstAddr(relay).toString()
    const before = Date.now()
    const coordinator = await start({ role: 'coordinator', reserveOn: [relayAddr] })

    const reservations = relay.services.relay?.reservations
    expect(reservations?.size).toBe(1)
    const reservation = reservations?.get(coordinator.peerId)
    expect(reservation?.limit).toEqual({ data: 65_536n, duration: 60_000 })
    const expiry = reservation?.expiry.getTime() ?? 0
    expect(expiry).toBeGreaterThanOrEqual(before + 600_000 - 1_000)
    expect(expiry).toBeLessThanOrEqual(Date.now() + 600_000 + 1_000)
    expect(circuitAddr(coordinator).toString()).toBe(`${relayAddr}/p2p-circuit/p2p/${coordinator.peerId}`)

    await expect(start({ role: 'agent', reserveOn: [relayAddr] })).rejects.toThrow(/RESERVATION_REFUSED/)
    expect(reservations?.size).toBe(1)
    expect(reservations?.has(coordinator.peerId)).toBe(true)
  })

  it('lets an agent reach a coordinator through a relay address and talk on a custom protocol', async () => {
    const relay = await start({ role: 'relay' })
    const coordinator = await start({ role: 'coordinator', reserveOn: [firstAddr(relay).toString()] })
    const seenBy: Array<{ peer: string; limited: boolean; addr: string }> = []
    await handleFramed(coordinator, ECHO, async (fs, connection) => {
      seenBy.push({
        peer: connection.remotePeer.toString(),
        limited: connection.limits !== undefined,
        addr: connection.remoteAddr.toString(),
      })
      await echo(fs, connection)
    })
    const agent = await start({ role: 'agent' })
    const target = circuitAddr(coordinator)

    // libp2p keeps application protocols off relayed connections unless asked
    await expect(agent.dialProtocol(target, ECHO)).rejects.toMatchObject({ name: 'LimitedConnectionError' })

    const fs = new FramedStream(await agent.dialProtocol(target, ECHO, { runOnLimitedConnection: true }))
    await fs.send(new TextEncoder().encode('via relay'))
    expect(new TextDecoder().decode(await fs.readOne({ timeoutMs: 10_000 }))).toBe('via relay')
    await fs.close()
    expect(await fs.read()).toBeUndefined()

    const relayed = agent.getConnections(coordinator.peerId)
    expect(relayed).toHaveLength(1)
    expect(relayed[0]?.remoteAddr.toString()).toContain('/p2p-circuit')
    expect(relayed[0]?.limits).toBeDefined()
    expect(seenBy).toEqual([
      { peer: agent.peerId.toString(), limited: true, addr: expect.stringContaining('/p2p-circuit') },
    ])
  })

  it('resets a relayed connection once it has carried dataLimitBytes', async () => {
    const limit = 64 * 1024
    const relay = await start({ role: 'relay', relay: { dataLimitBytes: limit } })
    const coordinator = await start({ role: 'coordinator', reserveOn: [firstAddr(relay).toString()] })
    await handleFramed(coordinator, ECHO, echo)
    const agent = await start({ role: 'agent' })
    const fs = new FramedStream(
      await agent.dialProtocol(circuitAddr(coordinator), ECHO, { runOnLimitedConnection: true }),
    )

    const frame = new Uint8Array(4096).fill(7)
    let echoed = 0
    let failure: unknown
    try {
      // both directions count towards the limit, so this must fail well before 20 round trips
      for (let i = 0; i < 20; i++) {
        await fs.send(frame)
        echoed += (await fs.readOne({ timeoutMs: 10_000 })).byteLength
      }
    } catch (err) {
      failure = err
    }
    expect(failure).toBeInstanceOf(Error)
    expect((failure as Error).name).not.toBe('TimeoutError')
    expect(echoed).toBeGreaterThan(0)
    expect(echoed).toBeLessThan(limit / 2)
  })

  it('closes a relayed connection after durationLimitMs', async () => {
    const durationLimitMs = 600
    const relay = await start({ role: 'relay', relay: { durationLimitMs } })
    const coordinator = await start({ role: 'coordinator', reserveOn: [firstAddr(relay).toString()] })
    await handleFramed(coordinator, ECHO, echo)
    const agent = await start({ role: 'agent' })

    const closed = connectionClosed(agent, coordinator.peerId)
    const opened = Date.now()
    const fs = new FramedStream(
      await agent.dialProtocol(circuitAddr(coordinator), ECHO, { runOnLimitedConnection: true }),
    )
    await fs.send(new Uint8Array([1]))
    await fs.readOne({ timeoutMs: 5_000 })

    const conn = await closed
    const lived = Date.now() - opened
    expect(conn.remoteAddr.toString()).toContain('/p2p-circuit')
    expect(lived).toBeGreaterThanOrEqual(durationLimitMs - 100)
    expect(lived).toBeLessThan(durationLimitMs + 5_000)
    // the direct connection to the relay is unaffected
    expect(agent.getConnections(relay.peerId)).toHaveLength(1)
  })
})
