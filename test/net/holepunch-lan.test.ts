// Peers behind one NAT, without a lab: which LAN candidates an offer carries and
// which of a peer's are taken, that the LAN stage keeps only a direct connection
// to the expected peer, the error when both peers share a public address and
// nothing worked (it must not blame a symmetric NAT or a firewall), and no
// backoff when libp2p drops the relayed connection an exchange ran on.

import net from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, PeerId, Upgrader } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import type { HolePunchConnectionManager, HolePunchNodeEvents } from '../../net/holepunch/api.ts'
import { lanCandidates, offeredLanCandidates, sharedPublicAddress } from '../../net/holepunch/candidates.ts'
import { SameNatUnreachableError } from '../../net/holepunch/errors.ts'
import { connectOverLan } from '../../net/holepunch/lan.ts'
import { startObserver } from '../../net/holepunch/observer-server.ts'
import { punchAndUpgrade } from '../../net/holepunch/punch.ts'
import { pickPunchPort } from '../../net/holepunch/punch-port.ts'
import { HolePunch } from '../../net/holepunch/service.ts'

const peer = async (): Promise<PeerId> => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
const log = defaultLogger().forComponent('test:holepunch-lan')

function connection(remotePeer: PeerId, addr: string): Connection {
  const conn = {
    remotePeer,
    remoteAddr: multiaddr(addr),
    status: 'open',
    abort: () => {
      conn.status = 'closed'
    },
  }
  return conn as unknown as Connection
}

function nodeEvents(): HolePunchNodeEvents & EventTarget {
  return new EventTarget() as HolePunchNodeEvents & EventTarget
}

describe('LAN candidates', () => {
  it('offers only private TCP listen addresses, at most three', () => {
    const listening = [
      '/ip4/10.3.0.10/tcp/4001',
      '/ip4/127.0.0.1/tcp/4001',
      '/ip4/203.0.113.7/tcp/4001',
      '/ip4/100.64.0.9/tcp/4001',
      '/ip4/192.168.1.5/udp/4001/quic-v1',
      '/ip4/192.168.1.5/tcp/4001/ws',
      '/ip4/10.3.0.10/tcp/4001',
      '/ip4/172.16.4.4/tcp/4002',
      '/ip4/192.168.1.5/tcp/4003',
      '/ip4/192.168.7.7/tcp/4004',
    ].map((a) => multiaddr(a))
    expect(lanCandidates(listening)).toEqual([
      { address: '10.3.0.10', port: 4001 },
      { address: '172.16.4.4', port: 4002 },
      { address: '192.168.1.5', port: 4003 },
    ])
  })

  it("takes a peer's candidates only from private ranges, and sees a shared public address", () => {
    const remote = {
      nat: 'endpoint-independent' as const,
      observed: [
        { address: '198.51.100.7', port: 61000 },
        { address: '10.3.0.10', port: 4001 },
        { address: '127.0.0.1', port: 22 },
        { address: '203.0.113.9', port: 80 },
      ],
    }
    expect(offeredLanCandidates(remote)).toEqual([{ address: '10.3.0.10', port: 4001 }])
    const local = {
      nat: 'endpoint-independent' as const,
      observed: [{ address: '198.51.100.7', port: 62000 }],
    }
    expect(sharedPublicAddress(local, remote)).toBe('198.51.100.7')
    const elsewhere = { ...local, observed: [{ address: '198.51.100.8', port: 62000 }] }
    expect(sharedPublicAddress(elsewhere, remote)).toBeUndefined()
  })
})

describe('the LAN stage', () => {
  it('keeps a dialled connection only if it is to the expected peer, and not relayed', async () => {
    const [expected, impostor, relay] = await Promise.all([peer(), peer(), peer()])
    const dialled: string[] = []
    const manager = (answer: Connection): HolePunchConnectionManager => ({
      getConnections: () => [],
      openConnection: async (target) => {
        dialled.push(target.toString())
        return answer
      },
    })
    const init = { events: nodeEvents(), log, windowMs: 300, signal: AbortSignal.timeout(5_000) }
    const candidates = [{ address: '10.3.0.10', port: 4001 }]
    // another key answered at the candidate's address: not the peer, and closed
    const wrong = connection(impostor, `/ip4/10.3.0.10/tcp/4001/p2p/${impostor}`)
    const refused = await connectOverLan(expected, candidates, { ...init, connectionManager: manager(wrong) })
    expect(refused).toEqual({
      connection: undefined,
      tried: [`10.3.0.10:4001: answered by ${impostor}, not the peer`],
    })
    expect(wrong.status).toBe('closed')
    const relayed = connection(expected, `/ip4/10.3.0.1/tcp/4001/p2p/${relay}/p2p-circuit/p2p/${expected}`)
    expect(
      (await connectOverLan(expected, candidates, { ...init, connectionManager: manager(relayed) }))
        .connection,
    ).toBeUndefined()
    const right = connection(expected, `/ip4/10.3.0.10/tcp/4001/p2p/${expected}`)
    expect(
      (await connectOverLan(expected, candidates, { ...init, connectionManager: manager(right) })).connection,
    ).toBe(right)
    // no peer id in the dial (libp2p would join it onto a dial through the relay): the key is checked after
    expect(dialled.at(-1)).toBe('/ip4/10.3.0.10/tcp/4001')
  })

  it('never aborts the signal of the dial that came up (libp2p would close the connection with it)', async () => {
    const expected = await peer()
    const events = nodeEvents()
    const right = connection(expected, `/ip4/10.3.0.10/tcp/4001/p2p/${expected}`)
    const signals: AbortSignal[] = []
    const { connection: result } = await connectOverLan(expected, [{ address: '10.3.0.10', port: 4001 }], {
      connectionManager: {
        getConnections: () => [],
        openConnection: async (_target, options) => {
          if (options?.signal !== undefined) signals.push(options.signal)
          // as libp2p does: the upgrader announces the connection before the dial's promise settles
          events.dispatchEvent(new CustomEvent('connection:open', { detail: right }))
          await new Promise((resolve) => setTimeout(resolve, 20))
          return right
        },
      },
      events,
      log,
      windowMs: 100,
      signal: AbortSignal.timeout(5_000),
    })
    expect(result).toBe(right)
    // past the window, and past the dial's own settling
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(signals.map((s) => s.aborted)).toEqual([false])
  })

  it("with no candidates to dial, takes the peer's own direct connection when it arrives", async () => {
    const expected = await peer()
    const events = nodeEvents()
    const inbound = connection(expected, '/ip4/10.3.0.11/tcp/51234')
    const waiting = connectOverLan(expected, [], {
      connectionManager: { getConnections: () => [], openConnection: () => Promise.reject(new Error('no')) },
      events,
      log,
      windowMs: 5_000,
      signal: AbortSignal.timeout(10_000),
    })
    events.dispatchEvent(new CustomEvent('connection:open', { detail: inbound }))
    expect((await waiting).connection).toBe(inbound)
  })
})

describe('same public address, nothing answers', () => {
  it('says both peers share the address and the router does not hairpin, not "symmetric" or "firewall"', async () => {
    const [self, remotePeer] = await Promise.all([peer(), peer()])
    // a port nothing listens on: the "router" answers RST, as one without hairpin NAT does
    const closed = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (server.address() as net.AddressInfo).port
        server.close(() => resolve(port))
      })
    })
    const punchPort = await pickPunchPort('127.0.0.1')
    const allowed: string[][] = []
    const attempt = punchAndUpgrade(
      {
        self,
        punchPort,
        settings: {
          localAddress: '127.0.0.1',
          attemptTimeoutMs: 100,
          deadlineMs: 300,
          upgradeTimeoutMs: 1_000,
          closeRelayed: false,
          // the host's dial scope is told the peer's LAN addresses before they are dialled
          allowLanDials: (ips) => allowed.push([...ips]),
        },
        upgrader: {} as Upgrader,
        connectionManager: {
          getConnections: () => [],
          openConnection: () => Promise.reject(new Error('refused')),
        },
        events: nodeEvents(),
        log,
      },
      remotePeer,
      {
        local: { nat: 'endpoint-independent', observed: [{ address: '127.0.0.1', port: punchPort }] },
        remote: {
          nat: 'endpoint-independent',
          observed: [
            { address: '127.0.0.1', port: closed },
            { address: '10.255.255.1', port: 4001 },
          ],
        },
      },
      1,
      {},
      AbortSignal.timeout(10_000),
    )
    const err = await attempt.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SameNatUnreachableError)
    const message = (err as Error).message
    expect(message).toContain('behind the same public address 127.0.0.1')
    expect(message).toContain('no LAN address answered (10.255.255.1:4001: refused)')
    expect(message).toContain('does not hairpin')
    expect(message).not.toMatch(/symmetric|firewall/)
    expect(allowed).toEqual([['10.255.255.1']])
  })
})

describe('a relayed connection dropped under the exchange', () => {
  it('is no reason to back off: the attempt is made again at once over the relayed connection that stays', async () => {
    const [self, coordinator, relay] = (await Promise.all([peer(), peer(), peer()])).sort((a, b) =>
      a.toString() < b.toString() ? -1 : 1,
    ) as [PeerId, PeerId, PeerId]
    const observer = await startObserver({ host: '127.0.0.1', ports: [0, 0] })
    const circuit = `/ip4/192.0.2.1/tcp/4001/p2p/${relay}/p2p-circuit/p2p/${coordinator}`
    const tried: string[] = []
    const relayedConnection = (id: string): Connection & { status: string } => {
      const conn = {
        id,
        remotePeer: coordinator,
        remoteAddr: multiaddr(circuit),
        status: 'open',
        newStream: async () => {
          tried.push(id)
          // as libp2p does with a duplicate connection to the same address: it aborts this one
          conn.status = 'closed'
          throw new Error('Duplicate multiaddr connection')
        },
      }
      return conn as unknown as Connection & { status: string }
    }
    const dropped = relayedConnection('dropped')
    const kept = relayedConnection('kept')
    const events = nodeEvents()
    const service = new HolePunch(
      {
        peerId: self,
        logger: defaultLogger(),
        upgrader: {} as Upgrader,
        registrar: { handle: async () => {}, unhandle: async () => {} },
        connectionManager: {
          getConnections: () => [dropped, kept].filter((c) => c.status === 'open'),
          openConnection: () => Promise.reject(new Error('no dialling here')),
        },
        events,
      },
      { observers: observer.ports.map((p) => `127.0.0.1:${p}`), localAddress: '127.0.0.1' },
    )
    await service.start()
    try {
      const second = new Promise<void>((resolve) => {
        service.addEventListener('attempt', () => {
          if (tried.length === 2) resolve()
        })
      })
      events.dispatchEvent(new CustomEvent('connection:open', { detail: dropped }))
      // without the retry, the next attempt would wait out the 60 s backoff
      await second
      expect(tried).toEqual(['dropped', 'kept'])
    } finally {
      await service.stop()
      await observer.close()
    }
  })
})
