// `fleetmesh watch` outlives a coordinator restart: with real processes, the
// coordinator is killed and started again on the same state and port, and the
// running watch reconnects (saying so) and prints what happens afterwards.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { Proc, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

describe('watch across a coordinator restart', () => {
  it('reconnects and prints later events', async () => {
    const coordinator = await fleet.startCoordinator()
    const watch = new Proc('watch', ['--home', fleet.home, 'watch', '--json'])
    fleet.procs.push(watch)
    // the watch is live once it reports the machine coming online
    await fleet.enrollAgent('edge-1', ['lab'])
    await watch.waitFor((e) => e.type !== undefined, 30_000, 'a first watch event')

    await coordinator.kill('SIGKILL')
    await fleet.startCoordinator()
    await watch.waitFor(() => watch.stderr.some((l) => l.includes('reconnected')), 60_000, 'reconnected')
    expect(watch.stderr.some((l) => l.includes('reconnecting in'))).toBe(true)

    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    const r = await fleet.deploy(archive, 'tag:lab', 'v1', ['--no-watch', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const rolloutId = (JSON.parse(r.stdout) as { rolloutId: string }).rolloutId
    await watch.waitFor((e) => e.type === 'manifest' && e.rolloutId === rolloutId, 30_000, 'the new rollout')
    expect(watch.child.exitCode).toBeNull()
  }, 180_000)
})
