/**
 * Two coordinators on one PostgreSQL database against one coordinator on
 * SQLite, in the same run and with the same agents' work: fan-out (a
 * manifest submitted on coordinator A, verified by every agent, half of them
 * connected to B, which hears of it through LISTEN/NOTIFY) and durable ingest
 * (every agent's burst of signed reports, each coordinator committing its own
 * agents' reports). Agents run in child processes (fleet-shards.ts), split
 * evenly between the coordinators. On this one machine both coordinators,
 * PostgreSQL and the agents share the cores, so the cluster's figure says
 * what the database and the cross-coordinator hop cost, not what two
 * machines would add.
 */
import { randomBytes } from 'node:crypto'
import { AdminClient } from '../admin/client.ts'
import { loadAdminHome } from '../admin/home.ts'
import { bytesSource, uploadBlob } from '../admin/upload.ts'
import { ClusterFleet } from '../testkit/cluster.ts'
import type { FleetDirectory } from '../testkit/fleetmesh.ts'
import { TestFleet } from '../testkit/harness.ts'
import { postgresUnavailable } from '../testkit/postgres.ts'
import { AgentShards } from './fleet-shards.ts'
import { fmt, line, percentile } from './measure.ts'
import { benchManifest } from './nats-peer.ts'

/** Where a group of agents connects. */
interface Target {
  addr: string
  peerId: string
}

interface Figures {
  fanoutP50: number
  fanoutP99: number
  ingest: number
}

/** Fan-out and ingest with `agents` split evenly over `targets`; manifests go through `home`'s coordinator. */
async function measure(
  fleet: FleetDirectory,
  home: string,
  targets: Target[],
  agents: number,
  rounds: number,
  reportsPerAgent: number,
): Promise<Figures> {
  const admin = await AdminClient.connect(await loadAdminHome(home))
  const groups: AgentShards[] = []
  try {
    for (const [i, t] of targets.entries()) {
      const count = Math.floor(agents / targets.length) + (i < agents % targets.length ? 1 : 0)
      groups.push(await AgentShards.start(fleet, count, 2, t.addr, t.peerId, `c${i}`))
    }
    const shards = AgentShards.combine(groups)
    const blob = bytesSource(randomBytes(1024))
    await uploadBlob(admin, blob)
    const adminHome = await loadAdminHome(home)
    const { samples } = await shards.fanOut(
      rounds,
      async (round) => benchManifest(adminHome, (await admin.fleetInfo()).maxSequence + 1, round, blob),
      (envelope) => admin.submitManifest(envelope),
    )
    samples.sort((a, b) => a - b)
    const seconds = await shards.burst(reportsPerAgent)
    return {
      fanoutP50: percentile(samples, 50),
      fanoutP99: percentile(samples, 99),
      ingest: (agents * reportsPerAgent) / seconds,
    }
  } finally {
    await admin.close()
    await Promise.all(groups.map((g) => g.stop()))
  }
}

export async function benchClusterThroughput(
  agents: number,
  rounds: number,
  reportsPerAgent: number,
): Promise<Record<string, number>> {
  const unavailable = postgresUnavailable()
  if (unavailable !== undefined) {
    console.log(`two coordinators on PostgreSQL: skipped, ${unavailable}`)
    return {}
  }
  const single = await TestFleet.create()
  let one: Figures
  try {
    await single.startCoordinator(['--idle-timeout', '10m'])
    const home = await loadAdminHome(single.home)
    const target = { addr: `/ip4/127.0.0.1/tcp/${single.port}`, peerId: home.fleet.coordinator.peerId }
    one = await measure(single, single.home, [target], agents, rounds, reportsPerAgent)
  } finally {
    await single.stop()
  }
  const cluster = await ClusterFleet.create()
  let two: Figures
  try {
    await cluster.start('a')
    await cluster.start('b')
    const targets = await Promise.all(
      (['a', 'b'] as const).map(async (name) => ({
        addr: `/ip4/127.0.0.1/tcp/${cluster.coordinators[name].port}`,
        peerId: await cluster.peerId(name),
      })),
    )
    two = await measure(cluster.fleet, cluster.fleet.home, targets, agents, rounds, reportsPerAgent)
  } finally {
    await cluster.stop()
  }
  console.log(
    `Two coordinators on PostgreSQL (agents split between them, manifests submitted on A) against one on SQLite: ${agents} agents, ${rounds} rounds, ${reportsPerAgent} reports each`,
  )
  line('fan-out p50 / p99, one coordinator, SQLite', `${fmt(one.fanoutP50, 1)} / ${fmt(one.fanoutP99, 1)} ms`)
  line(
    'fan-out p50 / p99, two coordinators, PostgreSQL',
    `${fmt(two.fanoutP50, 1)} / ${fmt(two.fanoutP99, 1)} ms`,
  )
  line('ratio two ÷ one, fan-out p99', fmt(two.fanoutP99 / one.fanoutP99, 2))
  line('durable ingest, one coordinator, SQLite', `${fmt(one.ingest)} /s`)
  line('durable ingest, two coordinators, PostgreSQL', `${fmt(two.ingest)} /s`)
  line('ratio two ÷ one, ingest', fmt(two.ingest / one.ingest, 2))
  return {
    'one sqlite fanout p99 ms': one.fanoutP99,
    'two pg fanout p99 ms': two.fanoutP99,
    'one sqlite ingest/s': one.ingest,
    'two pg ingest/s': two.ingest,
  }
}
