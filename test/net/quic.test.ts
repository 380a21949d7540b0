// QUIC beside TCP (net/transports.ts, net/host.ts) on loopback: listening on
// both, dialing QUIC first, falling back to TCP fast when UDP goes nowhere, and
// a relay reached over QUIC carrying circuits.

import { createSocket, type Socket } from 'node:dgram'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Address } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import { diagnose } from '../../net/doctor.ts'
import { formatDoctorReport } from '../../net/doctor-format.ts'
import { createHost, type FleetHost, type HostInit, isRelayed } from '../../net/host.ts'
import { transportAccess } from '../../net/reservation-store.ts'
import { ReservationKeeper } from '../../net/reservations.ts'
import { RUNTIME_FILE, snapshotHost } from '../../net/runtime.ts'
import {
  connectionTransport,
  QUIC_FAILURE_MEMORY_MS,
  QUIC_REPROBE_MS,
  QuicFailures,
  quicFirst,
  withQuic,
} from '../../net/transports.ts'

const hosts: FleetHost[] = []
const sockets: Socket[] = []
const keepers: ReservationKeeper[] = []

async function start(init: Omit<HostInit, 'privateKey'>): Promise<FleetHost> {
  const host = await createHost({ ...init, privateKey: await generateKeyPair('Ed25519') })
  hosts.push(host)
  return host
}

afterEach(async () => {
  for (const k of keepers.splice(0)) await k.stop()
  for (const host of hosts.splice(0).reverse()) if (host.status === 'started') await host.stop()
  for (const s of sockets.splice(0)) s.close()
})

function addrOf(host: FleetHost, transport: 'tcp' | 'quic-v1'): Multiaddr {
  const found = host.getMultiaddrs().find((a) => a.toString().includes(`/${transport}`))
  if (found === undefined) throw new Error(`host listens on no ${transport} address`)
  return found
}

/** A UDP port that takes every datagram and answers none: a firewall that drops UDP. */
async function udpSink(): Promise<number> {
  const sink = createSocket('udp4')
  sockets.push(sink)
  await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', () => resolve()))
  return sink.address().port
}

describe('listen addresses', () => {
  it('adds QUIC on the same port beside each TCP address, unless the list names QUIC itself', () => {
    expect(withQuic(['/ip4/0.0.0.0/tcp/4001'])).toEqual([
      '/ip4/0.0.0.0/tcp/4001',
      '/ip4/0.0.0.0/udp/4001/quic-v1',
    ])
    expect(withQuic(['/ip4/0.0.0.0/tcp/4001', '/ip4/0.0.0.0/udp/5001/quic-v1'])).toEqual([
      '/ip4/0.0.0.0/tcp/4001',
      '/ip4/0.0.0.0/udp/5001/quic-v1',
    ])
    expect(withQuic([])).toEqual([])
  })

  it('a coordinator given only a TCP address listens on QUIC too', async () => {
    const coordinator = await start({ role: 'coordinator', listen: ['/ip4/127.0.0.1/tcp/0'] })
    expect(addrOf(coordinator, 'tcp').toString()).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
    expect(addrOf(coordinator, 'quic-v1').toString()).toMatch(
      /^\/ip4\/127\.0\.0\.1\/udp\/\d+\/quic-v1\/p2p\//,
    )
  })
})

describe('dial order', () => {
  const at = (s: string): Address => ({ multiaddr: multiaddr(s), isCertified: false })

  it('puts QUIC before TCP within public and private addresses, and a QUIC address that timed out last', () => {
    const failures = new QuicFailures()
    const addrs = [
      at('/ip4/10.0.0.1/tcp/4001'),
      at('/ip4/93.184.216.34/tcp/4001'),
      at('/ip4/10.0.0.1/udp/4001/quic-v1'),
      at('/ip4/93.184.216.34/udp/4001/quic-v1'),
    ]
    const order = () => [...addrs].sort(quicFirst(failures)).map((a) => a.multiaddr.toString())
    expect(order()).toEqual([
      '/ip4/93.184.216.34/udp/4001/quic-v1',
      '/ip4/93.184.216.34/tcp/4001',
      '/ip4/10.0.0.1/udp/4001/quic-v1',
      '/ip4/10.0.0.1/tcp/4001',
    ])
    failures.record(multiaddr('/ip4/93.184.216.34/udp/4001/quic-v1'))
    expect(order().slice(0, 2)).toEqual([
      '/ip4/93.184.216.34/tcp/4001',
      '/ip4/93.184.216.34/udp/4001/quic-v1',
    ])
  })
})

describe('QUIC tries after a timed-out handshake', () => {
  it('are made at most once per QUIC_REPROBE_MS while the failure is remembered', () => {
    let now = 1_000_000
    const failures = new QuicFailures(QUIC_FAILURE_MEMORY_MS, () => now)
    const addr = multiaddr('/ip4/198.51.100.7/udp/4001/quic-v1')
    const other = multiaddr('/ip4/198.51.100.8/udp/4001/quic-v1')
    expect(failures.tryNow(addr)).toBe(true)
    failures.record(addr)
    expect(failures.tryNow(addr)).toBe(false)
    expect(failures.tryNow(other)).toBe(true)
    now += QUIC_REPROBE_MS
    expect(failures.tryNow(addr)).toBe(true) // the next try …
    expect(failures.tryNow(addr)).toBe(false) // … counts: not again at once
    now += QUIC_FAILURE_MEMORY_MS
    expect(failures.tryNow(addr)).toBe(true)
    expect(failures.tryNow(addr)).toBe(true) // forgotten: QUIC first again
    failures.record(addr)
    failures.forget(addr) // a handshake that succeeded
    expect(failures.tryNow(addr)).toBe(true)
  })

  it('a peer that is down is redialled without waiting on QUIC again', async () => {
    const agent = await start({ role: 'agent' })
    const down = await start({ role: 'coordinator', listen: ['/ip4/127.0.0.1/tcp/0'] })
    const tcp = addrOf(down, 'tcp').decapsulate('/p2p')
    const peer = down.peerId
    await down.stop() // TCP now refused at once
    const blackhole = multiaddr(`/ip4/127.0.0.1/udp/${await udpSink()}/quic-v1`)
    await agent.peerStore.merge(peer, { multiaddrs: [tcp, blackhole] })
    const failure = async () =>
      agent.dial(peer, { signal: AbortSignal.timeout(10_000) }).then(
        () => 'connected',
        (err: Error) => JSON.stringify(err, Object.getOwnPropertyNames(err)) + String(err),
      )
    expect(await failure()).toContain('QuicHandshakeTimeoutError')
    const again = await failure()
    expect(again).toContain('QuicRecentlyFailedError')
    expect(again).not.toContain('QuicHandshakeTimeoutError')
  })
})

describe('QUIC beside TCP', () => {
  it('an agent that knows both addresses connects over QUIC', async () => {
    const coordinator = await start({ role: 'coordinator', listen: ['/ip4/127.0.0.1/tcp/0'] })
    const agent = await start({ role: 'agent' })
    // TCP first in the peer store, as a token lists it: the order is the sorter's
    await agent.peerStore.merge(coordinator.peerId, {
      multiaddrs: [addrOf(coordinator, 'tcp'), addrOf(coordinator, 'quic-v1')].map((a) =>
        a.decapsulate('/p2p'),
      ),
    })
    const conn = await agent.dial(coordinator.peerId, { signal: AbortSignal.timeout(10_000) })
    expect(conn.remoteAddr.toString()).toContain('/quic-v1')
    expect(connectionTransport(conn)).toBe('quic')
    // and streams run over it
    const rtt = await agent.services.ping.ping(coordinator.peerId, { signal: AbortSignal.timeout(5_000) })
    expect(rtt).toBeGreaterThanOrEqual(0)
  })

  it('falls back to TCP when UDP goes nowhere, and dials TCP first from then on', async () => {
    const coordinator = await start({ role: 'coordinator', listen: ['/ip4/127.0.0.1/tcp/0'] })
    const agent = await start({ role: 'agent' })
    const blackhole = multiaddr(`/ip4/127.0.0.1/udp/${await udpSink()}/quic-v1`)
    await agent.peerStore.merge(coordinator.peerId, {
      multiaddrs: [addrOf(coordinator, 'tcp').decapsulate('/p2p'), blackhole],
    })
    const tried: string[] = []
    const onProgress = (e: { type: string; detail?: unknown }) => {
      if (e.type === 'transport-manager:selected-transport') tried.push(String(e.detail))
    }
    let started = Date.now()
    const first = await agent.dial(coordinator.peerId, { signal: AbortSignal.timeout(10_000), onProgress })
    console.log(`UDP dropped: connected over ${connectionTransport(first)} after ${Date.now() - started} ms`)
    expect(connectionTransport(first)).toBe('tcp')
    expect(tried).toEqual(['quic', '@libp2p/tcp'])

    await first.close()
    tried.length = 0
    started = Date.now()
    const again = await agent.dial(coordinator.peerId, { signal: AbortSignal.timeout(10_000), onProgress })
    console.log(`redial: connected over ${connectionTransport(again)} after ${Date.now() - started} ms`)
    expect(connectionTransport(again)).toBe('tcp')
    expect(tried).toEqual(['@libp2p/tcp'])
  })

  it('a relay reached over QUIC carries circuits', async () => {
    const relay = await start({ role: 'relay', listen: ['/ip4/127.0.0.1/tcp/0'] })
    const transports = transportAccess()
    const coordinator = await start({
      role: 'coordinator',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      extraServices: { fleetmeshTransports: transports.service },
    })
    const relayQuic = addrOf(relay, 'quic-v1')
    const reserved = new Promise<void>((resolve) => {
      keepers.push(
        new ReservationKeeper({
          host: coordinator,
          transportManager: transports.get(),
          relays: [relayQuic.toString()],
          onEvent: (e) => {
            if (e.status === 'ok') resolve()
          },
        }),
      )
    })
    keepers.at(-1)?.start()
    await reserved
    const toRelay = coordinator.getConnections(relay.peerId).find((c) => c.status === 'open')
    expect(toRelay?.remoteAddr.toString()).toContain('/quic-v1')

    const agent = await start({ role: 'agent' })
    const circuit = relayQuic.encapsulate(`/p2p-circuit/p2p/${coordinator.peerId}`)
    const conn = await agent.dial(circuit, { signal: AbortSignal.timeout(10_000) })
    expect(isRelayed(conn)).toBe(true)
    expect(connectionTransport(conn)).toBe('quic')
    const stream = await conn.newStream('/ipfs/ping/1.0.0', { runOnLimitedConnection: true })
    await stream.close()
  })
})

describe('doctor', () => {
  it('checks a QUIC coordinator address by its handshake and names the transport of each connection', async () => {
    const coordinator = await start({ role: 'coordinator', listen: ['/ip4/127.0.0.1/tcp/0'] })
    const agent = await start({ role: 'agent' })
    const quic = addrOf(coordinator, 'quic-v1')
    await agent.dial(quic, { signal: AbortSignal.timeout(10_000) })
    const dir = await mkdtemp(join(tmpdir(), 'fm-doctor-quic-'))
    try {
      const enrollment = {
        coordinator: { peerId: coordinator.peerId.toString(), addrs: [quic.decapsulate('/p2p').toString()] },
      }
      await writeFile(join(dir, 'enrollment.json'), JSON.stringify(enrollment))
      await writeFile(join(dir, RUNTIME_FILE), JSON.stringify(snapshotHost(agent, 'agent', {})))
      const report = await diagnose(dir, [])
      expect(report.coordinator?.reach).toEqual([
        { addr: enrollment.coordinator.addrs[0], result: 'reachable', ms: expect.any(Number) },
      ])
      expect(formatDoctorReport(report)).toMatch(/direct quic\s+outbound\s+\/ip4\/127\.0\.0\.1\/udp\//)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
