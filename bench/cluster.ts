/**
 * Several coordinators on one PostgreSQL database (testkit/cluster.ts): how
 * long the agents of a coordinator take to be back on another after kill -9 of
 * theirs (the goal: under 5 s for 500 agents).
 *
 * N agents enroll through coordinator A and run the agent's own control link
 * and failover (agent/link.ts, agent/failover.ts): each takes the signed list
 * of both coordinators from A and keeps it in a state directory of its own.
 * Then A is killed, and the clock runs from the kill to each agent's hello with
 * B. The agents live in this one process (a process each would measure Node
 * start-up), so their Noise handshakes share its one thread: the figure is an
 * upper bound for agents on machines of their own.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { loadAdminHome } from '../admin/home.ts'
import { Failover } from '../agent/failover.ts'
import { CoordinatorLink } from '../agent/link.ts'
import type { FleetHost } from '../net/index.ts'
import { ClusterFleet } from '../testkit/cluster.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { postgresUnavailable } from '../testkit/postgres.ts'
import { fmt, line, percentile } from './measure.ts'

const GOAL_MS = 5_000

interface ClusterAgent {
  host: FleetHost
  link: CoordinatorLink
}

export async function benchCluster(agentCount: number): Promise<Record<string, number>> {
  const unavailable = postgresUnavailable()
  if (unavailable !== undefined) {
    console.log(`skipped: ${unavailable}`)
    return {}
  }
  const cluster = await ClusterFleet.create()
  const agents: ClusterAgent[] = []
  try {
    const a = await cluster.start('a')
    await cluster.start('b')
    const b = await cluster.peerId('b')
    const home = await loadAdminHome(cluster.fleet.home)
    const fleet = { fleetRoot: home.fleetRoot, fleetId: home.fleet.fleetId }
    const agentsDir = join(cluster.fleet.dir, 'bench-agents')
    /** When each agent said hello to B, by performance.now() */
    const movedAt: number[] = []
    /** When each agent saw its link to A go */
    const lostAt: number[] = []
    let allMoved: () => void = () => {}
    const moved = new Promise<void>((resolve) => {
      allMoved = resolve
    })

    process.stdout.write(`  starting ${agentCount} agents on coordinator A…`)
    const started = Date.now()
    const batch = 20
    for (let i = 0; i < agentCount; i += batch) {
      await Promise.all(
        Array.from({ length: Math.min(batch, agentCount - i) }, async (_, j) => {
          const name = `fail-${String(i + j).padStart(4, '0')}`
          const stateDir = join(agentsDir, name)
          await mkdir(stateDir, { recursive: true })
          const { host } = await enrolledHost(cluster.fleet, name, ['bench'], stateDir)
          let listed: () => void = () => {}
          const gotList = new Promise<void>((resolve) => {
            listed = resolve
          })
          const failover = await Failover.open({
            stateDir,
            fleet,
            enrolled: home.fleet.coordinator,
            finderFor: () => undefined,
            allow: () => {},
            emit: (event) => {
              if (event === 'coordinators') listed()
            },
          })
          let lost = false
          const link = new CoordinatorLink({
            host,
            coordinator: failover.current().peer,
            coordinatorAddrs: failover.current().addrs,
            machine: name,
            keepaliveMs: 30_000,
            deadAfterMs: 600_000,
            queue: { pending: async () => [], ack: async () => {} },
            onManifest: () => {},
            coordinators: failover,
            onCoordinators: failover.receive,
            onState: (state) => {
              if (!state.connected && lostAt.length < agentCount && !lost) {
                lost = true
                lostAt.push(performance.now())
              }
              if (!state.connected || failover.peer().toString() !== b) return
              movedAt.push(performance.now())
              if (movedAt.length === agentCount) allMoved()
            },
          })
          agents.push({ host, link })
          const connected = link.whenConnected()
          link.start()
          await Promise.all([connected, gotList])
        }),
      )
    }
    process.stdout.write(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`)

    const killedAt = performance.now()
    await a.kill('SIGKILL')
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(resolve, 120_000, 'timeout').unref())
    const outcome = await Promise.race([moved, timeout])
    const times = movedAt.map((t) => t - killedAt).sort((x, y) => x - y)
    const noticed = lostAt.map((t) => t - killedAt).sort((x, y) => x - y)
    console.log(
      `Failover after kill -9 of coordinator A: ${agentCount} agents (in this process) from the kill to hello with B`,
    )
    if (outcome === 'timeout') line('agents on B after 120 s', `${times.length} of ${agentCount}`)
    const all = times.at(-1) ?? Number.NaN
    line('link loss noticed, every agent', `${fmt(noticed.at(-1) ?? Number.NaN, 0)} ms`)
    line('per agent p50', `${fmt(percentile(times, 50), 0)} ms`)
    line('per agent p99', `${fmt(percentile(times, 99), 0)} ms`)
    line('every agent on B', `${fmt(all, 0)} ms`)
    line(`ratio to the goal (${GOAL_MS / 1000} s for 500 agents)`, `${fmt(all / GOAL_MS, 2)}`)
    return {
      agents: agentCount,
      'failover p50 ms': percentile(times, 50),
      'failover p99 ms': percentile(times, 99),
      'failover all ms': all,
    }
  } finally {
    await Promise.all(
      agents.map(async ({ link, host }) => {
        await link.stop()
        await host.stop()
      }),
    )
    await cluster.stop()
  }
}
