// The hole-punching service's choices, without a network: which relayed peers it
// punches with (the role's shouldPunch), and how each end words a symmetric NAT.

import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, PeerId, Upgrader } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import type { HolePunchComponents, PunchAttempt } from '../../net/holepunch/api.ts'
import { answerPunch } from '../../net/holepunch/coordination.ts'
import { decisionSchema, replySchema } from '../../net/holepunch/messages.ts'
import { HolePunch } from '../../net/holepunch/service.ts'
import { encodeMessage, type FramedStream } from '../../protocol/index.ts'

async function peers(n: number): Promise<PeerId[]> {
  const ids = await Promise.all(
    Array.from({ length: n }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
  )
  // the lower peer id initiates a punch: the first one is the one that punches
  return ids.sort((a, b) => (a.toString() < b.toString() ? -1 : 1))
}

function relayedConnection(remotePeer: PeerId, relay: PeerId): Connection {
  return {
    remotePeer,
    remoteAddr: multiaddr(`/ip4/192.0.2.1/tcp/4001/p2p/${relay}/p2p-circuit/p2p/${remotePeer}`),
    status: 'open',
  } as unknown as Connection
}

describe('hole punching: who is punched', () => {
  it('punches only the relayed peers shouldPunch names, not a stranger met through a shared relay', async () => {
    const [self, coordinator, stranger, relay] = (await peers(4)) as [PeerId, PeerId, PeerId, PeerId]
    const events = new EventTarget()
    const components: HolePunchComponents = {
      peerId: self,
      logger: defaultLogger(),
      upgrader: {} as Upgrader,
      registrar: { handle: async () => {}, unhandle: async () => {} },
      connectionManager: {
        getConnections: () => [],
        openConnection: () => Promise.reject(new Error('no dialling here')),
      },
      events: events as unknown as HolePunchComponents['events'],
    }
    const service = new HolePunch(components, { shouldPunch: (peer) => peer.equals(coordinator) })
    await service.start()
    try {
      const attempts: PunchAttempt[] = []
      const coordinatorTried = new Promise<void>((resolve) => {
        service.addEventListener('attempt', (e) => {
          attempts.push(e.detail)
          if (e.detail.peer === coordinator.toString()) resolve()
        })
      })
      // the stranger's connection first: by the time the coordinator's attempt ends, its turn is long past
      for (const peer of [stranger, coordinator])
        events.dispatchEvent(new CustomEvent('connection:open', { detail: relayedConnection(peer, relay) }))
      await coordinatorTried
      // without observers it cannot offer an endpoint: an attempt, skipped, and only with the coordinator
      expect(attempts.map((a) => [a.peer, a.skipped])).toEqual([[coordinator.toString(), 'no-observation']])
      expect(Object.keys(service.status().attempts)).toEqual([coordinator.toString()])
    } finally {
      await service.stop()
    }
  })
})

/** One side of the exchange: reads what `incoming` holds, records what is sent. */
function scriptedStream(incoming: Uint8Array[]): FramedStream {
  return {
    send: async () => {},
    readOne: async () => {
      const next = incoming.shift()
      if (next === undefined) throw new Error('nothing more to read')
      return next
    },
    close: async () => {},
  } as unknown as FramedStream
}

describe('hole punching: which side is symmetric', () => {
  it("the responder behind a symmetric NAT says it is this host, not the initiator's 'the peer'", async () => {
    const connect = encodeMessage(replySchema, {
      type: 'connect',
      nat: 'endpoint-independent',
      observed: [{ address: '198.51.100.7', port: 61000 }],
    })
    // what the initiator sends: worded from its side
    const abort = encodeMessage(decisionSchema, {
      type: 'abort',
      reason: 'symmetric-nat',
      detail:
        'the peer is behind a symmetric NAT, so the punch mapping cannot be predicted; keeping the relay',
    })
    const outcome = await answerPunch(
      scriptedStream([connect, abort]),
      async () => ({ nat: 'symmetric', observed: [{ address: '203.0.113.9', port: 4242 }] }),
      { timeoutMs: 1000, signal: AbortSignal.timeout(5000) },
    )
    expect(outcome.kind).toBe('aborted')
    if (outcome.kind !== 'aborted') return
    expect(outcome.error.message).toContain('this host is behind a symmetric NAT')
    expect(outcome.error.message).not.toContain('the peer is')
  })
})
