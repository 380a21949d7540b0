// `fleetmesh deploy` when the coordinator dies (SIGKILL). After it accepted the
// rollout, deploy says the rollout is stored and goes on, reconnects once the
// coordinator is back and follows it to the end. Before, it says nothing was
// deployed (a kill timed into the upload is not reliable on loopback, where 100 MB
// go up before the kill lands; rollout-watch.test.ts covers a link lost there).
// Real processes on loopback.
import { writeFile } from 'node:fs/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { deployArgs } from '../../testkit/fleetmesh.ts'
import { Proc, TestFleet, waitForFile } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

const startDeploy = (archive: string, extra: string[] = []) => {
  const deploy = new Proc('deploy', ['--home', fleet.home, ...deployArgs(archive, 'tag:lab', 'v1', extra)])
  fleet.procs.push(deploy)
  return deploy
}

describe('deploy when the coordinator goes away', () => {
  it('after the rollout was accepted: says it goes on, reconnects and follows it to the end', async () => {
    const coordinator = await fleet.startCoordinator()
    for (const m of ['edge-1', 'edge-2']) await fleet.enrollAgent(m, ['lab'], fleet.activationEnv(m))
    // The activate hook says it started, then waits for a go file: the rollout is mid-flight.
    const archive = await makeArchive(fleet.dir, {
      version: 'v1',
      activate: 'echo started >> "$FM_TEST_LOG"; while [ ! -e "$FM_TEST_LOG.go" ]; do sleep 0.05; done',
    })
    const deploy = startDeploy(archive)
    await waitForFile(fleet.activationLog('edge-1'), (t) => t.includes('started'))
    await coordinator.kill('SIGKILL')
    await deploy.waitFor(
      () => deploy.stderr.some((l) => l.includes('reconnecting in')),
      30_000,
      'reconnecting',
    )
    await fleet.startCoordinator()
    for (const m of ['edge-1', 'edge-2']) await writeFile(`${fleet.activationLog(m)}.go`, '')

    const code = await deploy.exited
    const stderr = deploy.stderr.join('\n')
    expect(code, stderr).toBe(0)
    const rolloutId = /rollout ([0-9a-f]{32}): manifest/.exec(stderr)?.[1]
    expect(rolloutId, stderr).toBeDefined()
    expect(stderr).toContain(`rollout ${rolloutId} is stored there and goes on`)
    expect(stderr).toContain(`fleetmesh watch --rollout ${rolloutId}`)
    expect(stderr).toContain('reconnected to the coordinator')
    expect(stderr).not.toMatch(/Error/)
    const stdout = deploy.events.map((e) => e.text).join('\n')
    expect(stdout).toContain(`rollout ${rolloutId} settled: 2 committed`)
  }, 180_000)

  it('with the coordinator down from the start: says nothing was deployed', async () => {
    const coordinator = await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'])
    await coordinator.kill('SIGKILL')
    const r = await fleet.deploy(await makeArchive(fleet.dir, { version: 'v1' }), 'tag:lab', 'v1')
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toContain('nothing was deployed')
  }, 120_000)
})
