/**
 * Refused enrollments reach the hash-chained audit log at a bounded rate: anyone
 * who can open a connection can present a bad token, so one peer's refusals
 * beyond the per-peer limit are refused just the same but only counted, as
 * for unauthenticated admin requests. A real coordinator process, a stranger
 * peer speaking the enroll protocol.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFleetFile } from '../../admin/home.ts'
import { DEFAULT_REFUSAL_LIMITS } from '../../coordinator/audit-limiter.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { decodeMessage, encodeMessage } from '../../protocol/codec.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { enrollRequestSchema, enrollResponseSchema } from '../../protocol/messages.ts'
import { TestFleet } from '../../testkit/harness.ts'

const { perPeer } = DEFAULT_REFUSAL_LIMITS

let fleet: TestFleet
let coordinatorId: string
const hosts: FleetHost[] = []

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  coordinatorId = (await readFleetFile(fleet.home)).coordinator.peerId
}, 60_000)
afterAll(async () => {
  for (const h of hosts.splice(0)) await h.stop()
  await fleet.stop()
})

async function stranger(): Promise<FleetHost> {
  const h = await createHost({ role: 'agent', privateKey: await generateKeyPair('Ed25519'), listen: [] })
  hosts.push(h)
  await h.peerStore.merge(peerIdFromString(coordinatorId), {
    multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
  })
  return h
}

/** Presents a token that is not one; resolves with the refusal's code. */
async function enrollWithBadToken(h: FleetHost): Promise<string> {
  const stream = await h.dialProtocol(peerIdFromString(coordinatorId), PROTOCOLS.enroll)
  const fs = new FramedStream(stream, { maxFrameBytes: 1 << 20 })
  await fs.send(encodeMessage(enrollRequestSchema, { t: 'enroll', token: 'not-a-token', facts: {} }))
  const reply = decodeMessage(enrollResponseSchema, await fs.readOne({ timeoutMs: 30_000 }), 'reply', 1 << 20)
  await fs.close().catch(() => {})
  if (reply.ok) throw new Error('the coordinator accepted a bad token')
  return reply.error.code
}

interface AuditJson {
  verified: { ok: boolean }
  records: { peerId: string; action: string; outcome: string; detail: string }[]
}

describe('refused enrollments', () => {
  it('are recorded up to the per-peer limit, then only counted', async () => {
    const h = await stranger()
    const sent = perPeer * 3
    const codes = new Set<string>()
    for (let i = 0; i < sent; i++) codes.add(await enrollWithBadToken(h))
    expect([...codes]).toHaveLength(1)

    const log = await fleet.json<AuditJson>(['audit', '--limit', '10000'])
    expect(log.verified.ok).toBe(true)
    const mine = log.records.filter((r) => r.peerId === h.peerId.toString())
    expect(mine).toHaveLength(perPeer)
    for (const r of mine) expect(r).toMatchObject({ action: 'enroll', outcome: 'denied' })
    expect(mine.at(-1)?.detail).toContain(`rate limit of ${perPeer} recorded refusals from this peer reached`)

    // Another peer is recorded as before.
    const other = await stranger()
    await enrollWithBadToken(other)
    const after = await fleet.json<AuditJson>(['audit', '--limit', '10000'])
    expect(after.records.filter((r) => r.peerId === other.peerId.toString())).toHaveLength(1)
  }, 120_000)
})
