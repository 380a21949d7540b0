/**
 * The audit log against strangers: a peer without a certificate sends large
 * garbage frames to the admin protocol of a real coordinator process. Each
 * refusal costs the log a bounded record (the bytes are described, not kept),
 * `fleetmesh audit --verify` keeps working, and refusals from one peer beyond
 * the rate limit are only counted. Below that: pages cut by bytes, and the
 * limiter's counting, on their own.
 */
import { randomBytes } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFleetFile } from '../../admin/home.ts'
import { signAuditHash } from '../../coordinator/audit.ts'
import { DEFAULT_REFUSAL_LIMITS, RefusalLimiter } from '../../coordinator/audit-limiter.ts'
import { PrivateKey } from '../../keys/identity.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { auditRecordBytes } from '../../protocol/audit-log.ts'
import { decodeMessage } from '../../protocol/codec.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { adminResponseSchema } from '../../protocol/messages.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { describeStores } from '../../testkit/stores.ts'

const GARBAGE_BYTES = 256 * 1024
const { perPeer } = DEFAULT_REFUSAL_LIMITS

interface AuditJson {
  verified: { ok: boolean; problem?: string }
  records: { peerId: string; action: string; outcome: string; detail: string; request: number | null }[]
}

describe('a stranger on the admin protocol', () => {
  let fleet: TestFleet
  let coordinatorId: string
  const hosts: FleetHost[] = []

  beforeAll(async () => {
    fleet = await TestFleet.create()
    await fleet.startCoordinator()
    coordinatorId = (await readFleetFile(fleet.home)).coordinator.peerId
  })
  afterAll(async () => {
    for (const h of hosts.splice(0)) await h.stop()
    await fleet.stop()
  })

  /** A libp2p peer with a fresh key and no certificate. */
  async function stranger(): Promise<FleetHost> {
    const h = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519'), listen: [] })
    hosts.push(h)
    await h.peerStore.merge(peerIdFromString(coordinatorId), {
      multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
    })
    return h
  }

  /** Sends one garbage frame as an admin request; resolves with the refusal's code. */
  async function sendGarbage(h: FleetHost, size: number): Promise<string> {
    const stream = await h.dialProtocol(peerIdFromString(coordinatorId), PROTOCOLS.admin)
    const fs = new FramedStream(stream, { maxFrameBytes: 1 << 20 })
    await fs.send(new Uint8Array(randomBytes(size)))
    const reply = decodeMessage(
      adminResponseSchema,
      await fs.readOne({ timeoutMs: 30_000 }),
      'reply',
      1 << 22,
    )
    await fs.close().catch(() => {})
    if (reply.ok) throw new Error('the coordinator accepted garbage')
    return reply.error.code
  }

  async function storeBytes(): Promise<number> {
    let total = 0
    for (const file of [fleet.storePath, `${fleet.storePath}-wal`]) {
      total += await stat(file).then(
        (s) => s.size,
        () => 0,
      )
    }
    return total
  }

  async function audit(): Promise<AuditJson> {
    return fleet.json<AuditJson>(['audit', '--limit', '10000'])
  }

  it('records each 256 KiB garbage frame in a few hundred bytes, and audit --verify still works', async () => {
    const h = await stranger()
    const before = await storeBytes()
    const sent = perPeer - 2
    const codes: string[] = []
    for (let i = 0; i < sent; i++) codes.push(await sendGarbage(h, GARBAGE_BYTES))
    expect(codes).toEqual(Array(sent).fill('malformed'))
    // Before: every frame was stored whole, 2 MiB here (and the next audit page could not be sent).
    expect((await storeBytes()) - before).toBeLessThan(512 * 1024)

    const verified = await fleet.cli(['audit', '--verify', '--limit', '1000'])
    expect(verified.code, verified.stdout + verified.stderr).toBe(0)
    expect(verified.stdout).toContain('audit log verified')

    const mine = (await audit()).records.filter((r) => r.peerId === h.peerId.toString())
    expect(mine).toHaveLength(sent)
    for (const r of mine) {
      expect(r).toMatchObject({ action: 'unknown', outcome: 'denied', request: null })
      expect(r.detail).toMatch(/^malformed: /)
      expect(r.detail).toMatch(new RegExp(`request ${GARBAGE_BYTES} bytes, sha256 [0-9a-f]{64}`))
    }
  }, 120_000)

  it('counts refusals from one peer beyond the rate limit without recording them', async () => {
    const h = await stranger()
    const sent = perPeer * 3
    let refused = 0
    for (let i = 0; i < sent; i++) if ((await sendGarbage(h, 1024)) === 'malformed') refused++
    expect(refused).toBe(sent)

    const log = await audit()
    expect(log.verified.ok).toBe(true)
    const mine = log.records.filter((r) => r.peerId === h.peerId.toString())
    expect(mine).toHaveLength(perPeer)
    expect(mine.at(-1)?.detail).toContain(`rate limit of ${perPeer} recorded refusals from this peer reached`)
    // Another peer is recorded as before.
    const other = await stranger()
    await sendGarbage(other, 64)
    const after = await audit()
    expect(after.records.filter((r) => r.peerId === other.peerId.toString())).toHaveLength(1)
  }, 120_000)
})

describeStores((kind) => {
  describe('audit pages', () => {
    it('are cut by bytes as well as by count, a record larger than the budget alone', async () => {
      const store = await kind.open()
      const sign = signAuditHash(PrivateKey.generate())
      const admin = PrivateKey.generate()
      try {
        for (let i = 0; i < 5; i++) {
          await store.appendAudit(
            {
              at: i,
              peerId: admin.toPeerId().toString(),
              actor: admin.publicKey.toString(),
              action: 'submit-manifest',
              outcome: 'ok',
              detail: `record ${i}`,
              request: new Uint8Array(randomBytes(100_000)),
            },
            sign,
          )
        }
        const all = await store.listAudit(0, 10)
        const size = auditRecordBytes(all[0]!)
        expect(size).toBeGreaterThan(100_000)
        const page = await store.listAudit(0, 10, 2 * size + 10)
        expect(page.map((r) => r.index)).toEqual([1, 2])
        expect((await store.listAudit(2, 10, 2 * size + 10)).map((r) => r.index)).toEqual([3, 4])
        expect((await store.listAudit(4, 10, 1000)).map((r) => r.index)).toEqual([5])
        expect(await store.listAudit(5, 10, 1000)).toEqual([])
      } finally {
        await store.close()
      }
    })
  })
})

describe('RefusalLimiter', () => {
  const limits = { perPeer: 2, global: 5, windowMs: 1000, maxPeers: 100 }

  it('records up to the per-peer limit, says so at the limit, and reports what it left out a window later', () => {
    const limiter = new RefusalLimiter(limits)
    expect(limiter.admit('a', 0)).toEqual({ record: true, note: '' })
    const last = limiter.admit('a', 1)
    expect(last.record && last.note).toContain('rate limit of 2 recorded refusals from this peer reached')
    expect(limiter.admit('a', 2)).toEqual({ record: false })
    expect(limiter.admit('a', 3)).toEqual({ record: false })
    expect(limiter.suppressed).toBe(2)
    const later = limiter.admit('a', 1500)
    expect(later.record && later.note).toContain(
      '2 more refusals from this peer since 1970-01-01T00:00:00.000Z',
    )
  })

  it('limits all peers together, so fresh keys do not get around it', () => {
    const limiter = new RefusalLimiter(limits)
    const verdicts = Array.from({ length: 8 }, (_, i) => limiter.admit(`peer-${i}`, i))
    expect(verdicts.filter((v) => v.record)).toHaveLength(5)
    const fifth = verdicts[4]
    expect(fifth?.record && fifth.note).toContain('of unauthenticated requests from any peer reached')
  })
})
