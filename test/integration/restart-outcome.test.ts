/**
 * A failed update's outcome survives an agent restart: the first report after
 * the restart repeats the last update's state, error and log, so `machines`
 * keeps showing why the machine rolled back. Real processes on loopback.
 */
import { afterEach, beforeEach, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, reportsAcked, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

const isStatus = (state: string) => (e: Event) => e.event === 'status' && e.state === state

it('keeps a rollback and its reason in `machines` after the agent restarts', async () => {
  await fleet.startCoordinator()
  const env = fleet.activationEnv('edge-1')
  const agent = await fleet.enrollAgent('edge-1', [], env)
  const good = await makeArchive(fleet.dir, { version: 'good' })
  expect((await fleet.deploy(good, 'edge-1', 'good', ['--health-check', './health'])).code).toBe(0)
  const bad = await makeArchive(fleet.dir, { version: 'bad', healthExit: 1 })
  const r = await fleet.deploy(bad, 'edge-1', 'bad', ['--health-check', './health', '--health-retries', '0'])
  expect(r.code).toBe(1)
  await agent.waitFor(isStatus('rolled-back'), 10_000)
  const before = await fleet.machines()
  expect(before[0]?.error?.code).toBe('health-check-failed')

  await reportsAcked(agent)
  await agent.kill('SIGTERM')
  const again = fleet.startAgent('edge-1', [], env)
  const first = await again.waitFor((e) => e.event === 'status', 30_000, 'first report after restart')
  expect(first.state).toBe('rolled-back')
  expect(first.error).toEqual(before[0]?.error)
  // Acks are cumulative, one per commit batch: an ack of a later report covers the first.
  await again.waitFor(
    (e) => e.event === 'acked' && Number(e.seq) >= Number(first.seq),
    30_000,
    'report acked',
  )

  const after = await fleet.machines()
  expect(after[0]?.reportedAt).toBeGreaterThan(before[0]?.reportedAt ?? Number.POSITIVE_INFINITY)
  expect(after[0]?.state).toBe('rolled-back')
  expect(after[0]?.currentGeneration).toBe('good')
  expect(after[0]?.error?.code).toBe('health-check-failed')
  expect(after[0]?.error?.message).toBe(before[0]?.error?.message)
})
