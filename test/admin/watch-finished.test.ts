// `fleetmesh watch --rollout` of a rollout that is over, with a real coordinator
// and CLI on loopback. A finished rollout prints its outcome and exits at once,
// also after agents restarted: a restarted agent's first report repeats its own
// last update, which is not the rollout when it refused it (edge-2 here is an
// in-process agent identity that sends exactly those reports), and the
// coordinator must still show the rollout's outcome. A rollout that newer ones
// replaced ends saying which machines moved on to which rollout.
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadAdminHome } from '../../admin/home.ts'
import { CoordinatorLink } from '../../agent/link.ts'
import { DOMAINS } from '../../keys/index.ts'
import { sealEnvelope, statusReportSchema } from '../../protocol/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { enrolledHost } from '../../testkit/enrolled-host.ts'
import { sampleStatus } from '../../testkit/fixtures.ts'
import { type Proc, reportsAcked, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
const cleanups: (() => Promise<void>)[] = []
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup()
  await fleet.stop()
})

interface Submitted {
  rolloutId: string
  manifestId: string
}

async function deploy(target: string, version: string): Promise<Submitted> {
  const archive = await makeArchive(fleet.dir, { version })
  const r = await fleet.deploy(archive, target, version, ['--no-watch', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as Submitted
}

const committed = (agent: Proc, version: string) =>
  agent.waitFor(
    (e) => e.state === 'committed' && e.currentGeneration === version,
    60_000,
    `${version} committed`,
  )

/** A machine whose status reports the test writes itself, over a real control link. */
async function scriptedAgent(name: string, tags: string[]) {
  const { host, key } = await enrolledHost(fleet, name, tags, fleet.dir)
  const queue: { seq: number; envelope: Uint8Array }[] = []
  const acked: ((seq: number) => void)[] = []
  const link = new CoordinatorLink({
    host,
    coordinator: peerIdFromString((await loadAdminHome(fleet.home)).fleet.coordinator.peerId),
    coordinatorAddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
    machine: name,
    queue: {
      pending: async () => queue,
      ack: async (seq) => {
        while (queue.length > 0 && (queue[0]?.seq ?? 0) <= seq) queue.shift()
        for (const a of acked) a(seq)
      },
    },
    onManifest: () => {},
  })
  cleanups.push(async () => {
    await link.stop()
    await host.stop()
  })
  const connected = link.whenConnected()
  link.start()
  await connected
  return {
    /** Sends one report and resolves once the coordinator has stored it. */
    report(fields: Parameters<typeof sampleStatus>[0] & { seq: number }): Promise<void> {
      const report = sampleStatus({ machine: name, facts: {}, ...fields })
      const stored = new Promise<void>((resolve) => acked.push((seq) => seq >= fields.seq && resolve()))
      queue.push({ seq: fields.seq, envelope: sealEnvelope(statusReportSchema, DOMAINS.status, report, key) })
      link.flush()
      return stored
    },
  }
}

describe('watch of a finished rollout', () => {
  it('prints the outcome and exits at once after the agents restarted', async () => {
    await fleet.startCoordinator()
    const edge1 = await fleet.enrollAgent('edge-1', ['lab'])
    const edge2 = await scriptedAgent('edge-2', ['lab'])
    const x = await deploy('tag:lab', 'v1')
    await committed(edge1, 'v1')
    const ofX = { manifestId: x.manifestId, rolloutId: x.rolloutId, manifestSequence: 1 }
    await edge2.report({
      seq: 1,
      state: 'refused',
      ...ofX,
      currentGeneration: null,
      desiredGeneration: 'v1',
      error: { code: 'expired', message: 'the manifest expired before it arrived' },
    })

    // edge-1 restarts for real; its first report repeats its committed update.
    await reportsAcked(edge1)
    await edge1.kill('SIGTERM')
    const again = fleet.startAgent('edge-1')
    const first = await again.waitFor((e) => e.event === 'status', 30_000, 'first report after restart')
    // Acks are cumulative, one per commit batch: an ack of a later report covers the first.
    await again.waitFor(
      (e) => e.event === 'acked' && Number(e.seq) >= Number(first.seq),
      30_000,
      'report acked',
    )
    // edge-2 "restarts" having never started an update: its first report is idle, about no rollout.
    await edge2.report({
      seq: 2,
      state: 'idle',
      manifestId: null,
      rolloutId: null,
      manifestSequence: null,
      currentGeneration: null,
      desiredGeneration: null,
    })

    const r = await fleet.cli(['watch', '--rollout', x.rolloutId, '--timeout', '30s'])
    expect(r.code, r.stdout + r.stderr).toBe(1)
    expect(r.stdout).toContain(`rollout ${x.rolloutId} settled: 1 committed, 1 not committed`)
    expect(r.stdout).toContain('not committed: edge-2 (refused)')
  }, 180_000)
})

describe('watch of a superseded rollout', () => {
  it('ends saying which machines moved on to which rollout, live and afterwards', async () => {
    await fleet.startCoordinator()
    const edge1 = await fleet.enrollAgent('edge-1', ['lab'])
    const edge2 = await fleet.enrollAgent('edge-2', ['lab'])
    await edge2.kill('SIGTERM') // offline: it never finishes rollout X
    const x = await deploy('tag:lab', 'v1')
    await committed(edge1, 'v1')

    const live = fleet.cli(['watch', '--rollout', x.rolloutId, '--timeout', '60s', '--json'])
    const y = await deploy('tag:lab', 'v2')
    const watched = await live
    expect(watched.code, watched.stderr).toBe(3)
    const settled = JSON.parse(watched.stdout.trim().split('\n').at(-1) ?? '{}')
    expect(settled).toMatchObject({
      type: 'settled',
      committed: ['edge-1'],
      superseded: [
        { machine: 'edge-1', by: y.rolloutId, finished: 'committed' },
        { machine: 'edge-2', by: y.rolloutId, finished: null },
      ],
    })

    // Afterwards no machine's desired state is rollout X any more.
    await committed(edge1, 'v2')
    const after = await fleet.cli(['watch', '--rollout', x.rolloutId, '--timeout', '30s'])
    expect(after.code, after.stdout + after.stderr).toBe(3)
    expect(after.stdout).toContain('1 committed, 0 not committed, 1 superseded before finishing')
    expect(after.stdout).toContain(
      `superseded by rollout ${y.rolloutId}: edge-1 (committed first), edge-2 (unfinished)`,
    )
    expect(after.stdout).not.toMatch(/not settled: *$/m)

    const unknown = await fleet.cli(['watch', '--rollout', 'f'.repeat(32), '--timeout', '30s'])
    expect(unknown.code).toBe(4)
    expect(unknown.stdout).toContain('no machine you can see is part of it')
  }, 180_000)
})
