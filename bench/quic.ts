/**
 * QUIC against TCP + Noise + Yamux, in the same run, against one real
 * coordinator process on loopback that listens on both (the TCP port, and the
 * same port number in UDP):
 *
 *  - connection set-up: dial to the first stream answered (a ping), median and
 *    p99 over `dials` fresh connections per transport, alternating;
 *  - blob download throughput (bench/blob.ts's download, written, hashed and
 *    fsync'd), median of `runs` per transport over one connection of each;
 *  - manifest fan-out p99 to `agents` in-process agents whose control links run
 *    over each transport (bench/fleet.ts's agents and rounds).
 *
 * Every ratio is QUIC / TCP (below 1: QUIC takes less time; above 1 for
 * throughput: QUIC moves more). bench/nat.ts takes the set-up figure through
 * a lab router with loss and delay ({@link setUpTimes}, {@link printSetUp}).
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { AdminClient } from '../admin/client.ts'
import { loadAdminHome } from '../admin/home.ts'
import { bytesSource, uploadBlob } from '../admin/upload.ts'
import { coordinatorBlobFetcher } from '../agent/blob-fetcher.ts'
import { connectionTransport, createHost, type FleetHost, type TransportName } from '../net/index.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { TestFleet } from '../testkit/harness.ts'
import { blobFor, land } from './blob.ts'
import { type BenchAgent, fanOut, startBenchAgents } from './fleet.ts'
import { fmt, line, percentile } from './measure.ts'

const MIB = 1024 * 1024
const TRANSPORTS = ['quic', 'tcp'] as const
type Measured = (typeof TRANSPORTS)[number]

const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  )
const p99 = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    99,
  )

/** The coordinator's address for `transport`, with its peer id. */
function addrFor(port: number, peer: string, transport: Measured, ip = '127.0.0.1'): Multiaddr {
  const base = transport === 'quic' ? `/ip4/${ip}/udp/${port}/quic-v1` : `/ip4/${ip}/tcp/${port}`
  return multiaddr(`${base}/p2p/${peer}`)
}

/**
 * Leaves `host` with one connection to `peer`, a new one over `addr`: opened
 * first, then the others closed, so that nothing (the DHT, identify) dialling
 * the peer meanwhile finds no connection and opens one over QUIC.
 */
async function onlyOver(host: FleetHost, peer: PeerId, addr: Multiaddr): Promise<void> {
  const conn = await host.dial(addr, { signal: AbortSignal.timeout(10_000), force: true })
  const others = host.getConnections(peer).filter((c) => c.id !== conn.id)
  await Promise.all(others.map((c) => c.close().catch(() => c.abort(new Error('bench')))))
}

/** One fresh connection over `addr`, timed from the dial to the answer of its first stream (a ping). */
async function setUpOnce(host: FleetHost, addr: Multiaddr, expect: TransportName): Promise<number> {
  const t0 = performance.now()
  const conn = await host.dial(addr, { signal: AbortSignal.timeout(10_000), force: true })
  await host.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(10_000) })
  const ms = performance.now() - t0
  if (connectionTransport(conn) !== expect) throw new Error(`dialled ${addr} but got ${conn.remoteAddr}`)
  await conn.close()
  return ms
}

/**
 * Set-up times per transport, alternating so both see the same machine load.
 * `pauseMs` between dials keeps under the coordinator's per-IP connection rate.
 */
export async function setUpTimes(
  addrs: Record<Measured, Multiaddr>,
  dials: number,
  pauseMs = 15,
): Promise<Record<Measured, number[]>> {
  const host = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519') })
  const out: Record<Measured, number[]> = { quic: [], tcp: [] }
  try {
    for (const t of TRANSPORTS) await setUpOnce(host, addrs[t], t) // warm-up: JIT, first identify
    for (let i = 0; i < dials; i++) {
      for (const t of TRANSPORTS) {
        out[t].push(await setUpOnce(host, addrs[t], t))
        await new Promise((resolve) => setTimeout(resolve, pauseMs))
      }
    }
  } finally {
    await host.stop()
  }
  return out
}

/** Prints the set-up rows; returns the figures. */
export function printSetUp(label: string, times: Record<Measured, number[]>): Record<string, number> {
  console.log(`${label}: connection set-up, dial → first stream answered (${times.quic.length} dials each)`)
  for (const t of TRANSPORTS)
    line(
      `${t === 'quic' ? 'QUIC' : 'TCP + Noise + Yamux'} median / p99`,
      `${fmt(median(times[t]), 2)} / ${fmt(p99(times[t]), 2)} ms`,
    )
  line('ratio QUIC / TCP, median (below 1: QUIC faster)', fmt(median(times.quic) / median(times.tcp), 2))
  return {
    'setup quic median ms': median(times.quic),
    'setup quic p99 ms': p99(times.quic),
    'setup tcp median ms': median(times.tcp),
    'setup tcp p99 ms': p99(times.tcp),
  }
}

export async function benchQuic(dials: number, mib: number, runs: number, agents: number) {
  const out: Record<string, number> = {}
  const fleet = await TestFleet.create()
  const hosts: FleetHost[] = []
  let admin: AdminClient | undefined
  try {
    await fleet.startCoordinator(['--idle-timeout', '10m'])
    const home = await loadAdminHome(fleet.home)
    const coordinator = peerIdFromString(home.fleet.coordinator.peerId)
    const addrs = {
      quic: addrFor(fleet.port, coordinator.toString(), 'quic'),
      tcp: addrFor(fleet.port, coordinator.toString(), 'tcp'),
    }
    Object.assign(out, printSetUp('Loopback', await setUpTimes(addrs, dials)))

    // ---- blob download over one connection of each transport
    admin = await AdminClient.connect(home)
    const dir = join(fleet.dir, 'quic-bench')
    await mkdir(dir, { recursive: true })
    const { host } = await enrolledHost(fleet, 'quic-blob', ['quic-bench'], dir)
    hosts.push(host)
    const { sha256, size } = await blobFor(admin, home, 'quic-blob', mib * MIB)
    const fetcher = coordinatorBlobFetcher(host, coordinator)
    const dest = join(dir, 'download')
    const seconds: Record<Measured, number[]> = { quic: [], tcp: [] }
    for (let i = 0; i < runs; i++) {
      for (const t of TRANSPORTS) {
        // the fetcher streams over the open connection: make it the one of this transport
        await onlyOver(host, coordinator, addrs[t])
        const [s, hash] = await land(dest, (digest) =>
          fetcher.fetch(sha256, size, [], dest, () => {}, AbortSignal.timeout(600_000), digest),
        )
        if (hash !== sha256) throw new Error(`the ${t} download does not hash to the blob`)
        seconds[t].push(s)
      }
    }
    console.log(
      `Blob download, ${mib} MiB coordinator → agent, written, hashed and fsync'd; median of ${runs}`,
    )
    const rate = (t: Measured) => mib / median(seconds[t])
    line('over QUIC', `${fmt(rate('quic'), 1)} MiB/s`)
    line('over TCP + Noise + Yamux', `${fmt(rate('tcp'), 1)} MiB/s`)
    line('ratio QUIC / TCP (above 1: QUIC faster)', fmt(rate('quic') / rate('tcp'), 2))
    out['blob quic MiB/s'] = rate('quic')
    out['blob tcp MiB/s'] = rate('tcp')

    // ---- fan-out, one group of agents per transport, one group at a time
    const blob = bytesSource(new Uint8Array(1024).fill(7))
    await uploadBlob(admin, blob)
    const rounds = 5
    const fanout: Record<Measured, number[]> = { quic: [], tcp: [] }
    for (const t of TRANSPORTS) {
      // enrollment dials the token's TCP address; the link then reuses the connection opened here
      const onTransport = (h: FleetHost) => onlyOver(h, coordinator, addrs[t])
      const group: BenchAgent[] = []
      try {
        await startBenchAgents(fleet, home, agents, addrs.tcp.toString(), group, `fan-${t}`, onTransport)
        const off = group.filter((a) =>
          a.host.getConnections(coordinator).some((c) => connectionTransport(c) !== t),
        )
        if (off.length > 0) throw new Error(`${off.length} agents of the ${t} group are connected otherwise`)
        fanout[t] = (await fanOut(admin, home, group, rounds, blob)).samples
      } finally {
        await Promise.all(group.map(async (a) => [await a.link.stop(), await a.host.stop()]))
      }
    }
    console.log(
      `Manifest fan-out to ${agents} connected agents per transport (submit → verified), ${rounds} rounds`,
    )
    line('over QUIC p50 / p99', `${fmt(median(fanout.quic), 1)} / ${fmt(p99(fanout.quic), 1)} ms`)
    line(
      'over TCP + Noise + Yamux p50 / p99',
      `${fmt(median(fanout.tcp), 1)} / ${fmt(p99(fanout.tcp), 1)} ms`,
    )
    line('ratio QUIC / TCP, p99 (below 1: QUIC faster)', fmt(p99(fanout.quic) / p99(fanout.tcp), 2))
    out['fanout quic p99 ms'] = p99(fanout.quic)
    out['fanout tcp p99 ms'] = p99(fanout.tcp)
  } finally {
    for (const h of hosts) await h.stop()
    await admin?.close()
    await fleet.stop()
  }
  return out
}
