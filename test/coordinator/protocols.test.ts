/**
 * The coordinator's protocols against hostile or confused peers, over real libp2p
 * connections to an in-process coordinator with a real SQLite store: unknown peers,
 * garbage and oversized frames, stale and replayed admin requests.
 */
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadAdminHome } from '../../admin/home.ts'
import { type RunningCoordinator, startCoordinator } from '../../coordinator/daemon.ts'
import { DOMAINS } from '../../keys/domains.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { decodeMessage, encodeMessage } from '../../protocol/codec.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { adminRequestSchema, adminResponseSchema, controlFrameSchema } from '../../protocol/messages.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let coordinator: RunningCoordinator
const hosts: FleetHost[] = []

beforeEach(async () => {
  fleet = await TestFleet.create()
  coordinator = await startCoordinator({
    stateDir: fleet.coordState,
    listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
  })
})
afterEach(async () => {
  for (const h of hosts.splice(0)) await h.stop()
  await coordinator.stop()
  await fleet.stop()
})

async function peer(privateKey?: Awaited<ReturnType<typeof generateKeyPair>>): Promise<FleetHost> {
  const h = await createHost({
    role: 'admin',
    privateKey: privateKey ?? (await generateKeyPair('Ed25519')),
    listen: [],
  })
  hosts.push(h)
  await h.peerStore.merge(coordinator.host.peerId, {
    multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
  })
  return h
}

async function open(h: FleetHost, protocol: string): Promise<FramedStream> {
  return new FramedStream(await h.dialProtocol(coordinator.host.peerId, protocol), { maxFrameBytes: 1 << 20 })
}

describe('control protocol', () => {
  it('refuses a peer that is not enrolled', async () => {
    const fs = await open(await peer(), PROTOCOLS.control)
    await fs.send(
      encodeMessage(controlFrameSchema, {
        t: 'hello',
        wire: 1,
        role: 'agent',
        software: 'x',
        capabilities: [],
        machine: 'edge-1',
      }),
    )
    const reply = decodeMessage(controlFrameSchema, await fs.readOne({ timeoutMs: 10_000 }), 'reply', 1 << 20)
    expect(reply).toMatchObject({ t: 'error', error: { code: 'not-enrolled' } })
  })

  it('resets a stream that sends garbage or an oversized frame, counts it, and keeps serving', async () => {
    const h = await peer()
    // not control: that refuses an unenrolled peer before reading anything; blob decodes its first frame
    const garbage = await open(h, PROTOCOLS.blob)
    await garbage.send(new Uint8Array(randomBytes(200)))
    await expect(garbage.read({ timeoutMs: 10_000 })).rejects.toThrow()
    const big = await h.dialProtocol(coordinator.host.peerId, PROTOCOLS.blob)
    big.send(new Uint8Array([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]))
    const bigFs = new FramedStream(big)
    await expect(bigFs.read({ timeoutMs: 10_000 })).rejects.toThrow()
    const counts = coordinator.counters.snapshot()
    expect(counts.decode).toBeGreaterThanOrEqual(1)
    expect(counts.oversized).toBe(1)
    // the coordinator still answers on the same connection
    const fs = await open(h, PROTOCOLS.control)
    await fs.send(
      encodeMessage(controlFrameSchema, {
        t: 'hello',
        wire: 1,
        role: 'agent',
        software: 'x',
        capabilities: [],
      }),
    )
    expect(
      decodeMessage(controlFrameSchema, await fs.readOne({ timeoutMs: 10_000 }), 'reply', 1 << 20).t,
    ).toBe('error')
  })
})

describe('admin protocol', () => {
  async function adminRequest(h: FleetHost, issuedAt: number, nonce: string) {
    const home = await loadAdminHome(fleet.home)
    const fs = await open(h, PROTOCOLS.admin)
    await fs.send(
      sealEnvelope(
        adminRequestSchema,
        DOMAINS.adminRequest,
        { v: 1, nonce, issuedAt, body: { op: 'fleet-info' } },
        home.key,
        home.chain,
      ),
    )
    return decodeMessage(adminResponseSchema, await fs.readOne({ timeoutMs: 10_000 }), 'response', 1 << 22)
  }

  it('accepts a fresh signed request once, refuses its replay and a stale one, and audits all three', async () => {
    const h = await peer()
    const nonce = randomBytes(16).toString('hex')
    expect((await adminRequest(h, Date.now(), nonce)).ok).toBe(true)
    expect(await adminRequest(h, Date.now(), nonce)).toMatchObject({ ok: false, error: { code: 'replayed' } })
    expect(await adminRequest(h, Date.now() - 3_600_000, randomBytes(16).toString('hex'))).toMatchObject({
      ok: false,
      error: { code: 'stale-request' },
    })
    // The refusals are chained; the accepted read is counted apart from the chained log.
    const audit = await coordinator.store.listAudit(0, 100)
    expect(audit.map((r) => r.outcome)).toEqual(['denied', 'denied'])
    const reads = await coordinator.store.listReads(10)
    expect(reads.map((r) => [r.action, r.count])).toEqual([['fleet-info', 1]])
  })

  it('denies an unsigned or garbage request and records the attempt', async () => {
    const h = await peer()
    const fs = await open(h, PROTOCOLS.admin)
    await fs.send(new Uint8Array(randomBytes(64)))
    const reply = decodeMessage(
      adminResponseSchema,
      await fs.readOne({ timeoutMs: 10_000 }),
      'response',
      1 << 22,
    )
    expect(reply).toMatchObject({ ok: false, error: { code: 'malformed' } })
    const [record] = await coordinator.store.listAudit(0, 10)
    expect(record).toMatchObject({ outcome: 'denied', actor: null, peerId: h.peerId.toString() })
  })
})
