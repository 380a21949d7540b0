/**
 * Two coordinator processes serving one fleet from one PostgreSQL database,
 * with real agents: changes made on one reach the agents of the other through
 * the database's notifications (no polling), an enrollment token enrolls once
 * however many coordinators it is shown to, and rollout control runs on one
 * coordinator at a time and moves to the other when that one is killed, the
 * admin CLI fails over to another listed coordinator, and a PostgreSQL restart
 * loses no acknowledged report. PostgreSQL runs as a private cluster
 * (testkit/postgres.ts); without a server the tests skip, saying why.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import { openPostgresStore } from '../../coordinator/pg-store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { createHost, openStream, stopHost } from '../../net/index.ts'
import {
  decodeMessage,
  encodeMessage,
  enrollRequestSchema,
  enrollResponseSchema,
  FramedStream,
  PROTOCOLS,
} from '../../protocol/index.ts'
import { makeArchive, makeTar, sh } from '../../testkit/archives.ts'
import { ClusterFleet } from '../../testkit/cluster.ts'
import type { Event, Proc } from '../../testkit/harness.ts'
import { postgresUnavailable } from '../../testkit/postgres.ts'

const unavailable = postgresUnavailable()

const leading = (e: Event) => e.event === 'log' && String(e.msg).includes('now moves rollouts on')

/** Presents an enrollment token to one coordinator as a fresh peer: 'enrolled', or the refusal's code. */
async function presentToken(token: string, coordinator: string, port: number): Promise<string> {
  const host = await createHost({ role: 'agent', privateKey: PrivateKey.generate().toLibp2p(), listen: [] })
  try {
    const peer = peerIdFromString(coordinator)
    await host.peerStore.merge(peer, { multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${port}`)] })
    const stream = await openStream(host, peer, PROTOCOLS.enroll, { signal: AbortSignal.timeout(30_000) })
    const fs = new FramedStream(stream, { maxFrameBytes: 64 * 1024 })
    await fs.send(encodeMessage(enrollRequestSchema, { t: 'enroll', token, facts: {} }))
    const reply = await fs.readOne({ timeoutMs: 30_000 })
    const response = decodeMessage(enrollResponseSchema, reply, 'enroll response', 64 * 1024)
    return response.ok ? 'enrolled' : response.error.code
  } finally {
    await stopHost(host)
  }
}

const committed = (generation: string) => (e: Event) =>
  e.event === 'status' && e.state === 'committed' && e.desiredGeneration === generation

describe.skipIf(unavailable !== undefined)(
  `two coordinators on one PostgreSQL database${unavailable === undefined ? '' : ` (skipped: ${unavailable})`}`,
  () => {
    let cluster: ClusterFleet | undefined
    afterEach(async () => {
      await cluster?.stop()
      cluster = undefined
    })

    it('a deploy submitted on A reaches the agents of both, and watch on A sees them all', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      await c.start('a')
      await c.start('b')
      const agents: Proc[] = []
      for (const [via, names] of [
        ['a', ['a-1', 'a-2', 'a-3']],
        ['b', ['b-1', 'b-2', 'b-3']],
      ] as const)
        for (const name of names) agents.push(await c.enrollAgent(via, name, ['lab']))
      const archive = await makeArchive(c.fleet.dir, { version: 'v1' })
      // deploy watches on A until every target committed: B's agents' reports must reach A's watch
      const deployed = await c.cli('a', ['deploy', archive, '--to', 'tag:lab', '--generation', 'v1'], 90_000)
      expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
      for (const agent of agents) await agent.waitFor(committed('v1'), 60_000, `${agent.name} committed v1`)
      // A's machine list shows B's agents online too (B announced their sessions)
      const rows = JSON.parse((await c.cli('a', ['machines', '--json'])).stdout) as {
        name: string
        online: boolean
      }[]
      expect(rows.filter((m) => m.online).map((m) => m.name)).toEqual([
        'a-1',
        'a-2',
        'a-3',
        'b-1',
        'b-2',
        'b-3',
      ])

      // admins on both at once: the audit chain stays one verifiable line, signed by two coordinators
      const actions = await Promise.all([
        c.cli('a', ['enroll', 'later-a', '--json']),
        c.cli('b', ['enroll', 'later-b', '--json']),
        c.cli('a', ['deploy', archive, '--to', 'a-1', '--generation', 'v2', '--no-watch']),
        c.cli('b', ['deploy', archive, '--to', 'b-1', '--generation', 'v3', '--no-watch']),
      ])
      for (const r of actions) expect(r.code, r.stdout + r.stderr).toBe(0)
      for (const via of ['a', 'b'] as const) {
        const audit = await c.cli(via, ['audit', '--verify'])
        expect(audit.code, `audit --verify through ${via}: ${audit.stdout}${audit.stderr}`).toBe(0)
      }
    }, 240_000)

    it('the same enrollment token shown to both coordinators at once enrolls once', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      await c.start('a')
      await c.start('b')
      const token = await c.token('a', 'twice')
      const outcomes = await Promise.all(
        (['a', 'b'] as const).map(async (name) =>
          presentToken(token, await c.peerId(name), c.coordinators[name].port),
        ),
      )
      expect(outcomes.filter((o) => o === 'enrolled')).toHaveLength(1)
      // B weighed the token as its own (A is on the fleet's coordinator list): the loser lost the race
      expect(outcomes.filter((o) => o !== 'enrolled')).toEqual(['token-used'])
      expect((await c.cli('b', ['machines', '--json'])).stdout).toContain('"twice"')
    }, 120_000)

    it('a token made for a coordinator that is down enrolls through another one it names', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      const a = await c.start('a')
      await c.start('b')
      const token = await c.token('a', 'late') // made for A; it names B too, from the admin home's signed list
      await a.kill('SIGKILL')
      const agent = c.fleet.startAgent('late', ['--token', token])
      await agent.waitFor((e) => e.event === 'enrolled', 60_000, 'late enrolled')
      const bId = await c.peerId('b')
      await agent.waitFor((e) => e.event === 'connected' && e.peerId === bId, 30_000, 'late on coordinator B')
      const said = agent.events.filter((e) => e.event === 'log').map((e) => String(e.msg))
      expect(said.some((m) => m.includes('trying the next coordinator the token names'))).toBe(true)
    }, 120_000)

    it('rollout control moves to the other coordinator when the one running it is killed (kill -9)', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      const a = await c.start('a')
      await a.waitFor(leading, 30_000, 'A leads rollouts')
      const b = await c.start('b')
      const env = (m: string) => c.fleet.activationEnv(m)
      const canary = await c.enrollAgent('b', 'c-1', ['canary'], env('c-1'))
      const other = await c.enrollAgent('b', 'b-2', [], env('b-2'))
      const gate = join(c.fleet.dir, 'gate')
      const archive = await makeTar(c.fleet.dir, {
        'app/VERSION': 'v2\n',
        activate: sh(`set -e\nwhile [ ! -e "${gate}" ]; do sleep 0.1; done\necho v2 >> "$FM_TEST_LOG"`),
      })
      const waves = ['--waves', '1,100%', '--canary-tag', 'canary', '--no-watch', '--json']
      const r = await c.cli('a', ['deploy', archive.path, '--to', 'all', '--generation', 'v2', ...waves])
      expect(r.code, r.stderr).toBe(0)
      const { rolloutId } = JSON.parse(r.stdout) as { rolloutId: string }
      // the canary (B's agent) got wave 1 from A's submit, and is held in its activation
      await canary.waitFor(
        (e) => e.event === 'status' && e.state === 'activating',
        60_000,
        'canary activating',
      )
      expect(b.events.some(leading)).toBe(false)
      await a.kill('SIGKILL')
      await b.waitFor(leading, 30_000, 'B takes rollouts over')
      await writeFile(gate, '')
      await canary.waitFor(committed('v2'), 60_000, 'canary committed')
      await other.waitFor(committed('v2'), 60_000, 'wave 2 started by B')
      // A's admin home names A first: the CLI fails over to B, the other listed coordinator
      const show = await c.cli('a', ['rollout', 'show', rolloutId, '--watch', '--json'])
      expect(show.code, show.stderr).toBe(0)
      expect(JSON.parse(show.stdout)).toMatchObject({ state: 'done', counts: { done: 2 } })
    }, 240_000)

    it('after a PostgreSQL restart both reconnect, and every acknowledged report is stored', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      const a = await c.start('a')
      const b = await c.start('b')
      const agent = await c.enrollAgent('b', 'b-1')
      await c.pg.restart()
      const relistened = (e: Event) => e.event === 'log' && String(e.msg).includes('cluster listener: lost')
      await a.waitFor(relistened, 30_000, 'A saw its listener go')
      await b.waitFor(relistened, 30_000, 'B saw its listener go')
      // submitted on A after the restart: only B's re-made listener can bring it to b-1
      const archive = await makeArchive(c.fleet.dir, { version: 'v1' })
      const r = await c.cli('a', ['deploy', archive, '--to', 'b-1', '--generation', 'v1'], 90_000)
      expect(r.code, r.stdout + r.stderr).toBe(0)
      await agent.waitFor(committed('v1'), 60_000, 'b-1 committed v1')
      const acked = Math.max(...agent.events.filter((e) => e.event === 'acked').map((e) => Number(e.seq)))
      const store = await openPostgresStore(c.url)
      try {
        const stored = new Set((await store.statusHistory('b-1', 1000)).map((s) => s.seq))
        for (let seq = 1; seq <= acked; seq++)
          expect(stored.has(seq), `acknowledged report ${seq}`).toBe(true)
      } finally {
        await store.close()
      }
    }, 180_000)

    it('an added coordinator on a database that holds no fleet refuses to start, naming the database', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      // B joins a fleet; started first, it finds the database empty: never a reason to start an empty fleet
      const b = c.spawn('b')
      expect(await b.exited).not.toBe(0)
      const said = b.stderr.join('\n')
      expect(said).toContain('holds no fleet')
      expect(said).toContain('--store names this fleet')
      expect(said).not.toContain('fleet.db')
    }, 60_000)

    it('a coordinator whose blob directory is not the shared one says so when it starts', async () => {
      const c = await ClusterFleet.create()
      cluster = c
      await c.start('a')
      const archive = await makeArchive(c.fleet.dir, { version: 'v1' })
      const deployed = await c.cli('a', [
        'deploy',
        archive,
        '--to',
        'tag:later',
        '--allow-future-machines',
        '--generation',
        'v1',
        '--no-watch',
      ])
      expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
      const own = join(c.fleet.dir, 'blobs-of-b-alone')
      const b = await c.start('b', own)
      const said = await b.waitFor(
        (e) => e.event === 'log' && String(e.msg).includes('must share --blobs'),
        30_000,
        'the warning about blobs',
      )
      expect(String(said.msg)).toContain(own)
    }, 90_000)
  },
)
