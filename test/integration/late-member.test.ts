/**
 * What a rollout means for machines enrolled after it, with real processes: a
 * rollout to a tag reaches a machine that enrolls later with that tag (until
 * the manifest expires), joins that rollout's view, and is verified by the
 * agent against the signed targets; `--to all` names the machines enrolled at
 * the time, so a later machine without a matching tag gets nothing.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { sleep } from '../../lib/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

const committed = (generation: string) => (e: Event) =>
  e.event === 'status' && e.state === 'committed' && e.desiredGeneration === generation

describe('machines enrolled after a rollout', () => {
  it('a later machine with the tag gets the newest rollout to that tag; one without it gets nothing', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'], fleet.activationEnv('edge-1'))
    await fleet.enrollAgent('edge-2', ['web'], fleet.activationEnv('edge-2'))
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    expect((await fleet.deploy(v1, 'tag:lab', 'lab-v1', ['--timeout', '60s'])).code).toBe(0)
    const v2 = await makeArchive(fleet.dir, { version: 'v2' })
    // a newer rollout that does not target lab: a late lab member must still get lab-v1
    expect((await fleet.deploy(v2, 'all', 'all-v2', ['--timeout', '60s'])).code).toBe(0)

    const late = await fleet.enrollAgent('edge-3', ['lab'], fleet.activationEnv('edge-3'))
    await late.waitFor(committed('lab-v1'), 60_000, 'edge-3 committed lab-v1')
    const untagged = await fleet.enrollAgent('edge-4', ['db'], fleet.activationEnv('edge-4'))

    const rows = await fleet.machines()
    const byName = new Map(rows.map((m) => [m.name, m]))
    expect(byName.get('edge-3')).toMatchObject({ currentGeneration: 'lab-v1', desiredGeneration: 'lab-v1' })
    // all-v2 named edge-1 and edge-2 only; edge-4 carries no tag any rollout targeted
    expect(byName.get('edge-4')).toMatchObject({ desiredGeneration: null })
    expect(untagged.events.some((e) => e.event === 'status' && e.state !== 'idle')).toBe(false)
  }, 180_000)

  it('an expired manifest is not handed to a machine that enrolls after it expired', async () => {
    await fleet.startCoordinator()
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    const r = await fleet.deploy(v1, 'tag:lab', 'short-v1', [
      '--allow-future-machines',
      '--expires',
      '1s',
      '--no-watch',
    ])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    // the manifest expires one second after it was signed, which was before deploy returned:
    // waiting for that moment is the condition under test, not a stand-in for an event
    await sleep(1_100)
    await fleet.enrollAgent('edge-1', ['lab'], fleet.activationEnv('edge-1'))
    const rows = await fleet.machines()
    expect(rows.find((m) => m.name === 'edge-1')).toMatchObject({ desiredGeneration: null })
  }, 120_000)
})
