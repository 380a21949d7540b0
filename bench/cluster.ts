/**
 * Several coordinators on one PostgreSQL database (testkit/cluster.ts): how
 * long the agents of a coordinator take to be back on another after kill -9 of
 * theirs (the goal: under 5 s for 500 agents).
 *
 * N agents, spread over a few child processes (failover-child.ts) so that their
 * Noise handshakes do not queue on one thread as they would on no real fleet,
 * enroll through coordinator A and run the agent's own control link and
 * failover. Then A is killed, and the clock runs from the kill to each agent's
 * hello with B. The agents' processes still share this machine's two cores
 * with coordinator B and PostgreSQL, so the figure is an upper bound for
 * agents on machines of their own. It runs twice: with the agents holding
 * their standby connections to B (agent/standby.ts, the default), and with
 * every agent dialing B afresh (`--standby off`).
 */
import { ClusterFleet } from '../testkit/cluster.ts'
import { postgresUnavailable } from '../testkit/postgres.ts'
import { AGENT_NICE, AgentShards, Shard } from './fleet-shards.ts'
import { cpuSeconds, fmt, line, percentile } from './measure.ts'

const GOAL_MS = 5_000
const PATIENCE_MS = 120_000

/**
 * With `standby`, each agent holds its standby link to B (agent/standby.ts)
 * before the kill, as agents of a fleet with several coordinators do by default;
 * without it, every agent dials B afresh (`--standby off`).
 */
export async function benchCluster(
  agentCount: number,
  processes: number,
  standby = true,
): Promise<Record<string, number>> {
  const unavailable = postgresUnavailable()
  if (unavailable !== undefined) {
    console.log(`skipped: ${unavailable}`)
    return {}
  }
  const cluster = await ClusterFleet.create()
  const n = Math.max(1, Math.min(processes, agentCount))
  const shards = Array.from({ length: n }, () => new Shard(new URL('./failover-child.ts', import.meta.url)))
  try {
    const a = await cluster.start('a')
    const bPid = (await cluster.start('b')).child.pid as number
    const b = await cluster.peerId('b')

    process.stdout.write(
      `  starting ${agentCount} agents in ${n} processes at nice ${AGENT_NICE} on coordinator A…`,
    )
    const started = Date.now()
    // One process enrolling at a time, as the fleet bench does: all at once time out on a loaded machine.
    for (const [i, shard] of shards.entries()) {
      const count = Math.floor(agentCount / n) + (i < agentCount % n ? 1 : 0)
      await shard.ask(
        { op: 'failover-start', dir: cluster.fleet.dir, count, prefix: `fail${i}`, movedTo: b, standby },
        'started',
      )
    }
    process.stdout.write(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    const held = standby
      ? (
          await Promise.all(
            shards.map((s) => s.ask({ op: 'failover-standby', timeoutMs: PATIENCE_MS }, 'standing')),
          )
        )
          .map((r) => r.held)
          .reduce((x, y) => x + y, 0)
      : 0

    const bCpuBefore = await cpuSeconds(bPid)
    const killedAt = performance.timeOrigin + performance.now()
    await a.kill('SIGKILL')
    const replies = await Promise.all(
      shards.map((s) => s.ask({ op: 'failover-wait', timeoutMs: PATIENCE_MS }, 'moved')),
    )
    const bCpu = (await cpuSeconds(bPid)) - bCpuBefore
    const times = replies.flatMap((r) => r.at.map((t) => t - killedAt)).sort((x, y) => x - y)
    const noticed = replies.flatMap((r) => r.lost.map((t) => t - killedAt)).sort((x, y) => x - y)
    console.log(
      `Failover after kill -9 of coordinator A: ${agentCount} agents (in ${n} processes) from the kill to hello with B, ` +
        (standby ? 'each holding a standby connection to B' : 'each dialing B afresh (agent --standby off)'),
    )
    if (standby) line('agents holding a standby connection to B at the kill', `${held} of ${agentCount}`)
    if (times.length < agentCount)
      line(`agents on B after ${PATIENCE_MS / 1000} s`, `${times.length} of ${agentCount}`)
    const all = times.length === agentCount ? (times.at(-1) as number) : Number.NaN
    line('link loss noticed, every agent', `${fmt(noticed.at(-1) ?? Number.NaN, 0)} ms`)
    line('per agent p50', `${fmt(percentile(times, 50), 0)} ms`)
    line('per agent p99', `${fmt(percentile(times, 99), 0)} ms`)
    line('every agent on B', `${fmt(all, 0)} ms`)
    // what B itself spent: about the time it would need on cores of its own, the agents elsewhere
    line(
      'coordinator B CPU for the move (all its threads)',
      `${fmt(bCpu, 1)} s, ${fmt((bCpu / agentCount) * 1e3, 1)} ms per agent`,
    )
    const failed = new Map<string, number>()
    for (const [reason, count] of replies.flatMap((r) => r.failures))
      failed.set(reason, (failed.get(reason) ?? 0) + count)
    line('failed tries on the way (all agents)', fmt([...failed.values()].reduce((a, b) => a + b, 0)))
    for (const [reason, count] of [...failed].sort((x, y) => y[1] - x[1]).slice(0, 3))
      line(`  ${count} ×`, reason)
    line(`ratio to the goal (${GOAL_MS / 1000} s for 500 agents)`, `${fmt(all / GOAL_MS, 2)}`)
    const key = (name: string) => `failover ${standby ? '' : 'without standby '}${name}`
    return {
      agents: agentCount,
      [key('p50 ms')]: percentile(times, 50),
      [key('p99 ms')]: percentile(times, 99),
      [key('all ms')]: all,
      [key('coordinator cpu s')]: bCpu,
    }
  } finally {
    // the fleet bench's stop: each child that is still there stops its agents, then goes
    await AgentShards.around(shards, []).stop()
    await cluster.stop()
  }
}
