// The best path, always: an agent whose control link runs through a relay moves
// it to a direct connection as soon as one to the coordinator opens (here: the
// agent's host dials the coordinator's own address), without a reconnect: no
// `disconnected` state, no backoff (60 s here, so a reconnect would time the test
// out), and the relayed connection is closed. A fake coordinator on a real libp2p
// host, reserved on a real relay, all on loopback.
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { CoordinatorLink, type LinkState, type PathUpgrade } from '../../agent/link.ts'
import { connectionPath, createHost, type FleetHost } from '../../net/index.ts'
import {
  type ConnectionPath,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  handleFramed,
  MAX_ENVELOPE_BYTES,
  PROTOCOLS,
  WIRE_VERSION,
} from '../../protocol/index.ts'

const isCircuitAddr = (a: { toString(): string }) => a.toString().includes('/p2p-circuit')
const hosts: FleetHost[] = []
const links: CoordinatorLink[] = []

afterEach(async () => {
  for (const link of links.splice(0)) await link.stop()
  for (const host of hosts.splice(0).reverse()) await host.stop()
})

async function host(role: 'coordinator' | 'agent' | 'relay', reserveOn?: string): Promise<FleetHost> {
  const h = await createHost({
    role,
    listen: role === 'agent' ? [] : ['/ip4/127.0.0.1/tcp/0'],
    privateKey: await generateKeyPair('Ed25519'),
    ...(reserveOn ? { reserveOn: [reserveOn] } : {}),
  })
  hosts.push(h)
  return h
}

describe('agent control link: the best path', () => {
  it('moves a relayed control session to a direct connection once one opens, without reconnecting', {
    timeout: 20_000,
  }, async () => {
    const relay = await host('relay')
    const coordinator = await host('coordinator', relay.getMultiaddrs()[0]?.toString())
    // each control session the fake coordinator serves, by the path of its connection
    const sessions: ConnectionPath[] = []
    const secondHello = Promise.withResolvers<void>()
    await handleFramed(
      coordinator,
      PROTOCOLS.control,
      async (fs, connection: Connection) => {
        const hello = decodeControlFrame((await fs.read()) as Uint8Array, MAX_ENVELOPE_BYTES)
        if ('unknown' in hello || hello.t !== 'hello') throw new Error('expected the agent hello')
        sessions.push(connectionPath(connection))
        await fs.send(
          encodeMessage(controlFrameSchema, {
            t: 'hello',
            wire: WIRE_VERSION,
            role: 'coordinator',
            software: 'fleetmesh/test',
            capabilities: [],
          }),
        )
        if (sessions.length === 2) secondHello.resolve()
        for (let bytes = await fs.read(); bytes !== undefined; bytes = await fs.read()) {
          const frame = decodeControlFrame(bytes, MAX_ENVELOPE_BYTES)
          if (!('unknown' in frame) && frame.t === 'ping')
            await fs.send(encodeMessage(controlFrameSchema, { t: 'pong', nonce: frame.nonce }))
        }
      },
      { maxFrameBytes: MAX_ENVELOPE_BYTES + 4096 },
    )
    const circuit = coordinator.getMultiaddrs().find(isCircuitAddr)
    const direct = coordinator.getMultiaddrs().find((a) => !isCircuitAddr(a))
    if (circuit === undefined || direct === undefined)
      throw new Error('the coordinator has no relay reservation')

    const agent = await host('agent')
    const states: LinkState[] = []
    const moves: PathUpgrade[] = []
    const connected = Promise.withResolvers<void>()
    const link = new CoordinatorLink({
      host: agent,
      coordinator: coordinator.peerId,
      // the only address it knows: the relay's
      coordinatorAddrs: [circuit],
      machine: 'edge-1',
      queue: { pending: async () => [], ack: async () => {} },
      onManifest: () => {},
      backoffInitialMs: 60_000,
      onState: (state) => {
        states.push(state)
        if (state.connected) connected.resolve()
      },
      onPathUpgraded: (move) => moves.push(move),
    })
    links.push(link)
    link.start()
    await connected.promise
    expect(states).toEqual([
      { connected: true, path: 'relayed', addr: expect.stringContaining('/p2p-circuit') },
    ])

    // a direct connection appears (here dialled; punched or on the LAN alike)
    await agent.dial(direct)
    await secondHello.promise
    expect(sessions).toEqual(['relayed', 'direct'])
    await link.roundTrip(10_000)
    expect(states.map((s) => (s.connected ? s.path : 'disconnected'))).toEqual(['relayed', 'direct'])
    expect(moves).toEqual([
      {
        from: { path: 'relayed', addr: expect.stringContaining('/p2p-circuit') },
        to: { path: 'direct', addr: expect.not.stringContaining('/p2p-circuit') },
      },
    ])
    // the relayed connection it replaced is closed (closing may still be under way)
    await expect
      .poll(() => agent.getConnections(coordinator.peerId).map((c) => connectionPath(c)))
      .toEqual(['direct'])
  })
})
