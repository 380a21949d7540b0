/**
 * Agents fail over between the coordinators of one fleet: two coordinator
 * processes on one PostgreSQL database, three agents enrolled through each;
 * coordinator A is killed (kill -9) and its agents move to B, the next one of
 * the root-signed coordinator list they were sent, and keep reporting: a deploy
 * submitted on B after the kill reaches all six, and every report an agent saw
 * acknowledged (before the kill or after) is in the database. Without a
 * PostgreSQL server the test skips, saying why.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { openPostgresStore } from '../../coordinator/pg-store.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { ClusterFleet } from '../../testkit/cluster.ts'
import { type Event, type Proc, runCli } from '../../testkit/harness.ts'
import { postgresUnavailable } from '../../testkit/postgres.ts'

const unavailable = postgresUnavailable()

const committed = (generation: string) => (e: Event) =>
  e.event === 'status' && e.state === 'committed' && e.desiredGeneration === generation

/** The report seqs the agent saw acknowledged so far. */
const acked = (agent: Proc): number[] =>
  agent.events.filter((e) => e.event === 'acked').map((e) => Number(e.seq))

describe.skipIf(unavailable !== undefined)(
  `agents failing over between coordinators${unavailable === undefined ? '' : ` (skipped: ${unavailable})`}`,
  () => {
    let cluster: ClusterFleet | undefined
    afterEach(async () => {
      await cluster?.stop()
      cluster = undefined
    })

    it('kill -9 of a coordinator: its agents move to the other, keep reporting, and lose no acknowledged report', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      const a = await c.start('a')
      await c.start('b')
      const [aId, bId] = [await c.peerId('a'), await c.peerId('b')]
      const agents = new Map<string, Proc>()
      for (const [via, names] of [
        ['a', ['a-1', 'a-2', 'a-3']],
        ['b', ['b-1', 'b-2', 'b-3']],
      ] as const)
        for (const name of names) agents.set(name, await c.enrollAgent(via, name, ['lab']))
      for (const [name, agent] of agents) {
        // the list naming both, verified against the fleet root and kept
        const list = await agent.waitFor(
          (e) => e.event === 'coordinators' && (e.coordinators as string[]).length === 2,
          30_000,
          `${name} took the list of both coordinators`,
        )
        expect(list.coordinators).toEqual([aId, bId])
        // its first report (where it is) acknowledged before the kill
        await agent.waitFor((e) => e.event === 'acked', 30_000, `${name}'s first report acknowledged`)
      }
      // A's agents stand by with B (agent/standby.ts): B holds their standby streams as enrolled machines
      for (const name of ['a-1', 'a-2', 'a-3'])
        await agents
          .get(name)
          ?.waitFor(
            (e) => e.event === 'standby' && e.held === true && e.peerId === bId,
            30_000,
            `${name} holds a standby connection to coordinator B`,
          )
      const before = new Map([...agents].map(([name, agent]) => [name, acked(agent)]))

      await a.kill('SIGKILL')
      for (const name of ['a-1', 'a-2', 'a-3']) {
        const moved = await agents
          .get(name)
          ?.waitFor(
            (e) => e.event === 'connected' && e.peerId === bId,
            30_000,
            `${name} connected to coordinator B`,
          )
        expect(moved).toMatchObject({ coordinators: 2 })
      }

      // `doctor --state` names the coordinator an agent is on now, and how many it knows
      const doctor = await runCli(['doctor', '--state', c.fleet.agentState('a-1'), '--json'])
      expect(doctor.code, doctor.stderr).toBe(0)
      const report = JSON.parse(doctor.stdout) as {
        daemon: { snapshot: { details: Record<string, unknown> } }
      }
      expect(report.daemon.snapshot.details.coordinator).toMatchObject({
        connected: true,
        peerId: bId,
        coordinators: 2,
      })

      // submitted on B after the kill: it reaches A's former agents too, blobs and all, and B sees them commit
      const archive = await makeArchive(c.fleet.dir, { version: 'v1' })
      const deployed = await c.cli('b', ['deploy', archive, '--to', 'tag:lab', '--generation', 'v1'], 90_000)
      expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
      for (const [name, agent] of agents) await agent.waitFor(committed('v1'), 60_000, `${name} committed v1`)

      const store = await openPostgresStore(c.url)
      try {
        for (const [name, agent] of agents) {
          const stored = new Set((await store.statusHistory(name, 1000)).map((s) => s.seq))
          expect(
            before.get(name)?.length,
            `${name} had reports acknowledged before the kill`,
          ).toBeGreaterThan(0)
          for (const seq of acked(agent))
            expect(stored.has(seq), `${name}'s acknowledged report ${seq}`).toBe(true)
        }
      } finally {
        await store.close()
      }
    }, 240_000)
  },
)
