/**
 * Fleet-scale figures against a real coordinator process on loopback:
 *
 *  - manifest fan-out: from the admin's submit to each of N connected agents
 *    having verified the manifest end to end (p50 / p99 / max over agents and rounds);
 *  - signed status reports ingested per second, each acknowledged only after it is
 *    durably stored (SQLite, synchronous=FULL), and the ratio to the raw native
 *    Ed25519 verify rate (the reference: the signature check every report needs);
 *  - during that burst of reports: connections to the coordinator closed, by which
 *    end closed them, and the round trips a separate pinger process saw;
 *  - the reconnect storm: the coordinator killed (kill -9) with a report queued
 *    on every agent, started again, and the time from its being ready until
 *    every agent is back with that report acknowledged;
 *  - coordinator memory per connected agent (RSS growth / N).
 *
 * The agents are real libp2p hosts with their own keys and connections, enrolled
 * with real tokens, spread over a few child processes (fleet-shards.ts: a process
 * each would measure Node start-up, one for all would stall on the agents' side);
 * they verify manifests and do not apply them.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { AdminClient } from '../admin/client.ts'
import { type AdminHome, loadAdminHome } from '../admin/home.ts'
import { bytesSource, uploadBlob } from '../admin/upload.ts'
import { CoordinatorLink } from '../agent/link.ts'
import { verifyManifest } from '../agent/verify.ts'
import { CertificateMemo, DOMAINS, nodeEd25519, PrivateKey, signingInput } from '../keys/index.ts'
import type { FleetHost } from '../net/index.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import type { FleetDirectory } from '../testkit/fleetmesh.ts'
import { TestFleet } from '../testkit/harness.ts'
import { AGENT_NICE, AgentShards } from './fleet-shards.ts'
import { cpuSeconds, fmt, line, measureRate, percentile } from './measure.ts'
import { benchManifest, benchNatsPeer, natsMissing } from './nats-peer.ts'

export interface BenchAgent {
  name: string
  key: PrivateKey
  host: FleetHost
  link: CoordinatorLink
  queue: { seq: number; envelope: Uint8Array }[]
  onAck?: (seq: number) => void
  onVerified?: (manifestId: string) => void
}

/** The cores the coordinator and the agents' processes share: the floor of CPU-bound work is its CPU time over these. */
const CORES = availableParallelism()
/** How often the separate pinger pings the coordinator during the burst of reports. */
const PING_INTERVAL_MS = 100
/** The goal for the reconnect storm: 1,000 agents back, each with a report acked, within 10 s */
const STORM_GOAL_MS = 10_000
/** How long the storm may take before the bench says how far it got */
const STORM_PATIENCE_MS = 180_000

async function rss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const m = /VmRSS:\s+(\d+) kB/.exec(status)
  return m ? Number(m[1]) * 1024 : Number.NaN
}

export async function benchFleet(
  agentCount: number,
  rounds: number,
  reportsPerAgent: number,
  agentProcesses = 4,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  const fleet = await TestFleet.create()
  let shards: AgentShards | undefined
  let admin: AdminClient | undefined
  try {
    const coordinatorArgs = ['--idle-timeout', '10m']
    const coordinator = await fleet.startCoordinator(coordinatorArgs)
    const pid = coordinator.child.pid as number
    const home = await loadAdminHome(fleet.home)
    const coordAddr = `/ip4/127.0.0.1/tcp/${fleet.port}`
    // Let the coordinator settle, then take its baseline memory.
    admin = await AdminClient.connect(home)
    const infoBefore = await admin.fleetInfo()
    const rssBefore = await rss(pid)

    process.stdout.write(
      `  starting and enrolling ${agentCount} agents in ${agentProcesses} processes at nice ${AGENT_NICE} (they stand for other machines)…`,
    )
    const started = Date.now()
    const coordinatorPeer = home.fleet.coordinator.peerId
    // In two halves: the second half's growth is the cost of each added agent, without what the
    // first connections cost once (the young generation grown to its working size, compiled code).
    const added = Math.floor(agentCount / 2)
    const firstProcesses = Math.max(1, Math.ceil(agentProcesses / 2))
    const first = await AgentShards.start(
      fleet,
      agentCount - added,
      firstProcesses,
      coordAddr,
      coordinatorPeer,
      'b',
    )
    shards = first
    const rssHalf = await rss(pid)
    const second =
      added > 0
        ? await AgentShards.start(
            fleet,
            added,
            Math.max(1, agentProcesses - firstProcesses),
            coordAddr,
            coordinatorPeer,
            'c',
          )
        : undefined
    if (second) shards = AgentShards.combine([first, second])
    process.stdout.write(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    const rssAfter = await rss(pid)
    out['rss per added agent bytes'] = added > 0 ? (rssAfter - rssHalf) / added : Number.NaN
    const infoAfter = await admin.fleetInfo()
    out['rss per agent bytes'] = (rssAfter - rssBefore) / agentCount
    out['heap per agent bytes'] = (infoAfter.memory.heapUsed - infoBefore.memory.heapUsed) / agentCount

    // ---- fan-out
    const blob = bytesSource(randomBytes(1024))
    await uploadBlob(admin, blob)

    const client = admin
    const [fanCoordBefore, fanAgentsBefore] = [await cpuSeconds(pid), await shards.cpuSeconds()]
    const { samples, maxima } = await shards.fanOut(
      rounds,
      async (round) => benchManifest(home, (await client.fleetInfo()).maxSequence + 1, round, blob),
      (envelope) => client.submitManifest(envelope),
    )
    samples.sort((a, b) => a - b)
    maxima.sort((a, b) => a - b)
    console.log(
      `Manifest fan-out to ${agentCount} connected agents (submit → verified on each agent), ${rounds} rounds`,
    )
    line('per agent p50', `${fmt(percentile(samples, 50), 1)} ms`)
    line('per agent p99', `${fmt(percentile(samples, 99), 1)} ms`)
    line('every agent verified (median of rounds)', `${fmt(percentile(maxima, 50), 1)} ms`)
    // per round: what the coordinator and the processes standing for agents spent, and so the
    // least time one round needs on this machine's cores, whoever runs it
    const fanCoord = ((await cpuSeconds(pid)) - fanCoordBefore) / rounds
    const fanAgents = ((await shards.cpuSeconds()) - fanAgentsBefore) / rounds
    line(
      "CPU per round: coordinator / agents' processes",
      `${fmt(fanCoord * 1000)} / ${fmt(fanAgents * 1000)} ms`,
    )
    line(
      `least time a round needs on this machine's ${CORES} cores`,
      `${fmt(((fanCoord + fanAgents) / CORES) * 1000)} ms`,
    )
    out['fanout coordinator cpu per round ms'] = fanCoord * 1000
    out['fanout agents cpu per round ms'] = fanAgents * 1000
    out['fanout p50 ms'] = percentile(samples, 50)
    out['fanout p99 ms'] = percentile(samples, 99)
    out['fanout all ms'] = percentile(maxima, 50)

    // ---- status ingest: a burst of reports from every agent at once
    const total = agentCount * reportsPerAgent
    await shards.startPinger(coordAddr, coordinatorPeer, PING_INTERVAL_MS)
    await shards.count(true)
    const [cpuBefore, mainBefore] = [await cpuSeconds(pid), await cpuSeconds(pid, true)]
    const agentsBefore = await shards.cpuSeconds()
    const seconds = await shards.burst(reportsPerAgent)
    const cpu = (await cpuSeconds(pid)) - cpuBefore
    const mainCpu = (await cpuSeconds(pid, true)) - mainBefore
    const agentsCpu = (await shards.cpuSeconds()) - agentsBefore
    const closed = await shards.count(false)
    const rtts = (await shards.stopPinger()).sort((a, b) => a - b)
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
    line('coordinator CPU per report (all its threads)', `${fmt((cpu / total) * 1e6)} µs`)
    line('… of it on its main thread (reads, commits, acks)', `${fmt((mainCpu / total) * 1e6)} µs`)
    line('coordinator CPU in use during the burst', `${fmt(cpu / seconds, 2)} cores`)
    // on this one machine the agents' side of each report (sealing, Noise, yamux) shares the cores
    line("agents' processes' CPU in use meanwhile", `${fmt(agentsCpu / seconds, 2)} cores`)
    out['agents cpu per report us'] = (agentsCpu / total) * 1e6
    out['coordinator main thread cpu per report us'] = (mainCpu / total) * 1e6
    out['coordinator cpu per report us'] = (cpu / total) * 1e6
    out['ingest/s'] = rate
    out['ingest/native verify ratio'] = rate / nativeVerify
    console.log(`During that burst (${agentCount} agents in ${shards.processes} processes, ${total} reports)`)
    line('connections closed by the coordinator (or the network)', `${closed.coordinator}`)
    line('connections closed by the agents', `${closed.agent}`)
    for (const example of closed.examples) line('  e.g.', example)
    const pingLine = (p: number) =>
      Number.isFinite(percentile(rtts, p)) ? `${fmt(percentile(rtts, p), 1)} ms` : 'failed'
    line(
      `separate pinger, every ${PING_INTERVAL_MS} ms: p50 / p99 / max`,
      `${pingLine(50)} / ${pingLine(99)} / ${pingLine(100)} (${rtts.length} pings)`,
    )
    out['burst closes by coordinator'] = closed.coordinator
    out['burst closes by agents'] = closed.agent
    out['burst ping p99 ms'] = percentile(rtts, 99)

    // ---- reconnect storm: every agent holds a report when the coordinator dies, and brings it back
    const stormSeq = await shards.queue(1)
    await coordinator.kill('SIGKILL')
    const back = shards.flushed(stormSeq, 1) // each link sends it after its next hello
    const restarted = await fleet.startCoordinator(coordinatorArgs)
    const readyAt = performance.timeOrigin + performance.now()
    const stormCpuBefore = await cpuSeconds(restarted.child.pid as number)
    const stormAgentsBefore = await shards.cpuSeconds()
    const patience = new Promise<'timeout'>((resolve) =>
      setTimeout(resolve, STORM_PATIENCE_MS, 'timeout').unref(),
    )
    const lastAck = await Promise.race([back, patience])
    console.log(
      `Reconnect storm: kill -9 of the coordinator with a report queued on each of ${agentCount} agents, started again`,
    )
    if (lastAck === 'timeout') {
      line('every agent back with its report acked', `not within ${STORM_PATIENCE_MS / 1000} s`)
      out['storm all ms'] = Number.NaN
    } else {
      const ms = lastAck - readyAt
      const stormCpu = (await cpuSeconds(restarted.child.pid as number)) - stormCpuBefore
      const stormAgentsCpu = (await shards.cpuSeconds()) - stormAgentsBefore
      line('from ready to every agent back with its report acked', `${fmt(ms)} ms`)
      line('coordinator CPU meanwhile (all its threads)', `${fmt(stormCpu, 1)} s`)
      // their reconnects' handshakes: with the coordinator's, the least time this machine's cores need
      line("agents' processes' CPU meanwhile", `${fmt(stormAgentsCpu, 1)} s`)
      line(
        `least time both need on this machine's ${CORES} cores`,
        `${fmt(((stormCpu + stormAgentsCpu) / CORES) * 1000)} ms`,
      )
      out['storm coordinator cpu s'] = stormCpu
      out['storm agents cpu s'] = stormAgentsCpu
      line(`ratio to the goal (${STORM_GOAL_MS / 1000} s for 1,000 agents)`, fmt(ms / STORM_GOAL_MS, 2))
      out['storm all ms'] = ms
    }

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
          processes: shards.processes,
          homeDir: fleet.home,
          blob: { sha256, size },
          tls,
        })
        const name = tls ? 'NATS+TLS' : 'NATS plaintext'
        console.log(
          `${name} peer, the same work in the same run (nats-server; a coordinator hop process admitting, ` +
            `committing to SQLite and publishing; ${agentCount} subscribers verifying; reports by request/reply into StatusIngest)` +
            `, subscribers in ${shards.processes} processes as the agents are`,
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
      `RSS per added agent (growth from ${agentCount - added} to ${agentCount} agents)`,
      `${fmt((out['rss per added agent bytes'] ?? Number.NaN) / 1024, 1)} KiB`,
    )
    line(
      'live JS heap per connected agent (no forced GC, so an upper bound)',
      `${fmt((out['heap per agent bytes'] ?? 0) / 1024, 1)} KiB`,
    )
  } finally {
    await shards?.stop()
    await admin?.close()
    await fleet.stop()
  }
  return out
}

/**
 * Starts and enrolls `agentCount` in-process agents, each with a control link to
 * the coordinator at `coordAddr`, into `agents` as they come up (so the caller
 * stops them whatever happens).
 */
export async function startBenchAgents(
  fleet: FleetDirectory,
  home: AdminHome,
  agentCount: number,
  coordAddr: string,
  agents: BenchAgent[],
  prefix = 'bench',
  /** Runs on each enrolled host before its link starts (e.g. to open the connection the link will reuse) */
  before: (host: FleetHost) => Promise<void> = async () => {},
): Promise<void> {
  const batch = 20
  const agentsDir = join(fleet.dir, 'agents')
  await mkdir(agentsDir, { recursive: true })
  for (let i = 0; i < agentCount; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, agentCount - i) }, async (_, j) => {
        const name = `${prefix}-${String(i + j).padStart(4, '0')}`
        const { key, host } = await enrolledHost(fleet, name, ['bench'], agentsDir)
        await before(host)
        const queue: BenchAgent['queue'] = []
        const hooks: Pick<BenchAgent, 'onAck' | 'onVerified'> = {}
        const certificates = new CertificateMemo() // each agent its own, as the agent daemon keeps one
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
              certificates,
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
}

/** `rounds` manifests for tag:bench, one after another: per agent, submit → verified; and per round, the slowest. */
export async function fanOut(
  admin: AdminClient,
  home: AdminHome,
  agents: readonly BenchAgent[],
  rounds: number,
  blob: { sha256: string; size: number },
): Promise<{ samples: number[]; maxima: number[] }> {
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
  return { samples, maxima }
}
