/**
 * Fleet-scale figures against a real coordinator process on loopback:
 *
 *  - manifest fan-out: from the admin's submit to each of N connected agents
 *    having verified the manifest end to end (p50 / p99 / max over agents and rounds);
 *  - signed status reports ingested per second, each acknowledged only after it is
 *    durably stored (SQLite, synchronous=FULL), and the ratio to the raw native
 *    Ed25519 verify rate (the reference: the signature check every report needs);
 *  - coordinator memory per connected agent (RSS growth / N).
 *
 * The agents are real libp2p hosts with their own keys and connections, enrolled
 * with real tokens, but they live in this one process (a process each would
 * measure Node start-up, not fleetmesh); they verify manifests and do not apply them.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { AdminClient } from '../admin/client.ts'
import { loadAdminHome } from '../admin/home.ts'
import { bytesSource, uploadBlob } from '../admin/upload.ts'
import { CoordinatorLink } from '../agent/link.ts'
import { verifyManifest } from '../agent/verify.ts'
import { DOMAINS, nodeEd25519, PrivateKey, signingInput } from '../keys/index.ts'
import type { FleetHost } from '../net/index.ts'
import { sealEnvelope, statusReportSchema } from '../protocol/index.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { sampleStatus } from '../testkit/fixtures.ts'
import { TestFleet } from '../testkit/harness.ts'
import { fmt, line, measureRate, percentile } from './measure.ts'
import { benchManifest, benchNatsPeer, natsMissing } from './nats-peer.ts'

interface BenchAgent {
  name: string
  key: PrivateKey
  host: FleetHost
  link: CoordinatorLink
  queue: { seq: number; envelope: Uint8Array }[]
  onAck?: (seq: number) => void
  onVerified?: (manifestId: string) => void
}

async function rss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const m = /VmRSS:\s+(\d+) kB/.exec(status)
  return m ? Number(m[1]) * 1024 : Number.NaN
}

export async function benchFleet(
  agentCount: number,
  rounds: number,
  reportsPerAgent: number,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  const fleet = await TestFleet.create()
  const agents: BenchAgent[] = []
  let admin: AdminClient | undefined
  try {
    const coordinator = await fleet.startCoordinator(['--idle-timeout', '10m'])
    const pid = coordinator.child.pid as number
    const home = await loadAdminHome(fleet.home)
    const coordAddr = `/ip4/127.0.0.1/tcp/${fleet.port}`
    // Let the coordinator settle, then take its baseline memory.
    admin = await AdminClient.connect(home)
    const infoBefore = await admin.fleetInfo()
    const rssBefore = await rss(pid)

    process.stdout.write(`  starting and enrolling ${agentCount} agents…`)
    const started = Date.now()
    const batch = 20
    const agentsDir = join(fleet.dir, 'agents')
    await mkdir(agentsDir, { recursive: true })
    for (let i = 0; i < agentCount; i += batch) {
      await Promise.all(
        Array.from({ length: Math.min(batch, agentCount - i) }, async (_, j) => {
          const name = `bench-${String(i + j).padStart(4, '0')}`
          const { key, host } = await enrolledHost(fleet, name, ['bench'], agentsDir)
          const queue: BenchAgent['queue'] = []
          const hooks: Pick<BenchAgent, 'onAck' | 'onVerified'> = {}
          const link = new CoordinatorLink({
            host,
            coordinator: peerIdFromString(home.fleet.coordinator.peerId),
            coordinatorAddrs: [multiaddr(coordAddr)],
            machine: name,
            keepaliveMs: 30_000,
            deadAfterMs: 600_000,
            queue: {
              pending: async () => queue,
              ack: async (seq) => {
                while (queue.length > 0 && (queue[0] as { seq: number }).seq <= seq) queue.shift()
                hooks.onAck?.(seq)
              },
            },
            onManifest: (envelope) => {
              const v = verifyManifest(envelope, {
                fleetRoot: home.fleetRoot,
                fleetId: home.fleet.fleetId,
                machine: name,
                tags: ['bench'],
                lastSequence: 0,
              })
              hooks.onVerified?.(v.manifest.id)
            },
          })
          const connected = link.whenConnected()
          link.start()
          await connected
          agents.push(Object.assign(hooks, { name, key, host, link, queue }))
        }),
      )
    }
    process.stdout.write(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    const rssAfter = await rss(pid)
    const infoAfter = await admin.fleetInfo()
    out['rss per agent bytes'] = (rssAfter - rssBefore) / agentCount
    out['heap per agent bytes'] = (infoAfter.memory.heapUsed - infoBefore.memory.heapUsed) / agentCount

    // ---- fan-out
    const blob = bytesSource(randomBytes(1024))
    await uploadBlob(admin, blob)

    const samples: number[] = []
    const maxima: number[] = []
    for (let round = 0; round < rounds; round++) {
      const info = await admin.fleetInfo()
      const { manifest, envelope } = benchManifest(home, info.maxSequence + 1, round, blob)
      const times: number[] = []
      const all = new Promise<void>((resolve) => {
        for (const a of agents) {
          a.onVerified = (id) => {
            if (id !== manifest.id) return
            times.push(performance.now() - t0)
            if (times.length === agents.length) resolve()
          }
        }
      })
      const t0 = performance.now()
      await admin.submitManifest(envelope)
      await all
      samples.push(...times)
      maxima.push(Math.max(...times))
    }
    samples.sort((a, b) => a - b)
    maxima.sort((a, b) => a - b)
    console.log(
      `Manifest fan-out to ${agentCount} connected agents (submit → verified on each agent), ${rounds} rounds`,
    )
    line('per agent p50', `${fmt(percentile(samples, 50), 1)} ms`)
    line('per agent p99', `${fmt(percentile(samples, 99), 1)} ms`)
    line('every agent verified (median of rounds)', `${fmt(percentile(maxima, 50), 1)} ms`)
    out['fanout p50 ms'] = percentile(samples, 50)
    out['fanout p99 ms'] = percentile(samples, 99)
    out['fanout all ms'] = percentile(maxima, 50)

    // ---- status ingest
    let seq = 1_000
    for (const a of agents) {
      for (let i = 0; i < reportsPerAgent; i++) {
        const report = sampleStatus({ machine: a.name, seq: ++seq, state: 'idle', facts: { bench: 'yes' } })
        a.queue.push({ seq, envelope: sealEnvelope(statusReportSchema, DOMAINS.status, report, a.key) })
      }
    }
    const total = agents.length * reportsPerAgent
    const done = Promise.all(
      agents.map(
        (a) =>
          new Promise<void>((resolve) => {
            const last = (a.queue.at(-1) as { seq: number }).seq
            a.onAck = (s) => {
              if (s >= last) resolve()
            }
          }),
      ),
    )
    const t1 = performance.now()
    for (const a of agents) a.link.flush()
    await done
    const seconds = (performance.now() - t1) / 1000
    const rate = total / seconds
    const pub = PrivateKey.generate()
    const msg = signingInput(DOMAINS.status, new Uint8Array(400).fill(1))
    const sig = pub.sign(DOMAINS.status, new Uint8Array(400).fill(1))
    const nativeVerify = measureRate(
      () => nodeEd25519.verifyRaw(pub.publicKey.bytes, msg, sig),
      1,
      32,
    ).perSecond
    console.log(
      `Signed status reports ingested, each acked after a durable commit (${total} reports from ${agentCount} agents)`,
    )
    line('reports ingested', `${fmt(rate)} /s`)
    line('raw native Ed25519 verify in this process (reference)', `${fmt(nativeVerify)} /s`)
    line('ratio ingest / native verify', `${fmt((rate / nativeVerify) * 100, 1)} %`)
    out['ingest/s'] = rate
    out['ingest/native verify ratio'] = rate / nativeVerify

    const nats = natsMissing()
    if (nats !== undefined) console.log(`NATS peer: skipped, ${nats}`)
    else {
      const { sha256, size } = blob
      const ratio = (ours: number, theirs: number, lowerIsBetter: boolean) => {
        const r = ours / theirs
        const better = lowerIsBetter ? r <= 1 : r >= 1
        return `${fmt(r, 2)} (${better ? 'fleetmesh ahead' : 'fleetmesh behind'})`
      }
      // fleetmesh encrypts every link (Noise): the like-for-like peer runs TLS; plaintext NATS is context
      for (const tls of [true, false]) {
        const n = await benchNatsPeer({
          home,
          agents: agentCount,
          rounds,
          reportsPerAgent,
          blob: { sha256, size },
          tls,
        })
        const name = tls ? 'NATS+TLS' : 'NATS plaintext'
        console.log(
          `${name} peer, the same work in the same run (nats-server; a coordinator hop process admitting, ` +
            `committing to SQLite and publishing; ${agentCount} subscribers verifying; reports by request/reply into StatusIngest)`,
        )
        line(`${name} fan-out per subscriber p50 / p99`, `${fmt(n.fanoutP50, 1)} / ${fmt(n.fanoutP99, 1)} ms`)
        line(`${name} every subscriber verified (median of rounds)`, `${fmt(n.fanoutAll, 1)} ms`)
        line(`${name} reports ingested (durable, request/reply)`, `${fmt(n.ingestPerSecond)} /s`)
        line(`ratio fleetmesh ÷ ${name} fan-out p50`, ratio(out['fanout p50 ms'] ?? 0, n.fanoutP50, true))
        line(`ratio fleetmesh ÷ ${name} fan-out p99`, ratio(out['fanout p99 ms'] ?? 0, n.fanoutP99, true))
        line(`ratio fleetmesh ÷ ${name} ingest`, ratio(rate, n.ingestPerSecond, false))
        const key = tls ? 'nats tls' : 'nats'
        out[`${key} fanout p50 ms`] = n.fanoutP50
        out[`${key} fanout p99 ms`] = n.fanoutP99
        out[`${key} ingest/s`] = n.ingestPerSecond
      }
    }

    console.log('Coordinator memory')
    line(
      `RSS growth for ${agentCount} connected agents`,
      `${fmt((rssAfter - rssBefore) / 1024 / 1024, 1)} MiB`,
    )
    line('RSS per connected agent', `${fmt(out['rss per agent bytes'] / 1024, 1)} KiB`)
    line(
      'live JS heap per connected agent (no forced GC, so an upper bound)',
      `${fmt((out['heap per agent bytes'] ?? 0) / 1024, 1)} KiB`,
    )
  } finally {
    await Promise.all(
      agents.map(async (a) => {
        await a.link.stop()
        await a.host.stop()
      }),
    )
    await admin?.close()
    await fleet.stop()
  }
  return out
}
