/**
 * Maintenance windows with real processes: a deploy whose window is closed now
 * leaves the agent `waiting-for-window` on its old generation (as `machines`
 * shows), and a deploy whose window contains now commits, taking over from the
 * one still waiting. The agent reads windows in UTC (--timezone), and the
 * windows are computed from the current time, so the test does not depend on
 * the hour it runs at.
 */
import { readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, runCli, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

const HOUR = 3_600_000
/** "HH:MM" in UTC, `offsetMs` from now. */
const utc = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString().slice(11, 16)

const status = (state: string, generation: string) => (e: Event) =>
  e.event === 'status' && e.state === state && e.desiredGeneration === generation

describe('maintenance windows', () => {
  it('a closed window holds the activation back; an open one lets it through', async () => {
    await fleet.startCoordinator()
    const token = await fleet.token('edge-1', ['lab'])
    const agent = fleet.startAgent(
      'edge-1',
      ['--token', token, '--timezone', 'UTC'],
      fleet.activationEnv('edge-1'),
    )
    await agent.waitFor((e) => e.event === 'connected', 30_000, 'edge-1 connected')
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    expect((await fleet.deploy(v1, 'tag:lab', 'app-v1', ['--timeout', '60s'])).code).toBe(0)

    // opens in three hours: downloaded now, not activated
    const v2 = await makeArchive(fleet.dir, { version: 'v2' })
    const closed = `lab=${utc(3 * HOUR)}-${utc(4 * HOUR)}`
    const r2 = await fleet.deploy(v2, 'tag:lab', 'app-v2', ['--window', closed, '--no-watch'])
    expect(r2.code, r2.stderr).toBe(0)
    await agent.waitFor(status('waiting-for-window', 'app-v2'), 60_000, 'edge-1 waiting for its window')
    const rows = await fleet.machines()
    expect(rows.find((m) => m.name === 'edge-1')).toMatchObject({
      state: 'waiting-for-window',
      currentGeneration: 'app-v1',
      desiredGeneration: 'app-v2',
    })
    expect(await readlink(join(fleet.agentState('edge-1'), 'profile', 'current'))).toContain('app-v1')

    // a window around now: activates at once, and takes over from the update still waiting
    const v3 = await makeArchive(fleet.dir, { version: 'v3' })
    const open = `lab=${utc(-HOUR)}-${utc(HOUR)}`
    const r3 = await fleet.deploy(v3, 'tag:lab', 'app-v3', ['--window', open, '--timeout', '60s'])
    expect(r3.code, r3.stdout + r3.stderr).toBe(0)
    const after = await fleet.machines()
    expect(after.find((m) => m.name === 'edge-1')).toMatchObject({
      state: 'committed',
      currentGeneration: 'app-v3',
    })
    expect(agent.events.some(status('activating', 'app-v2'))).toBe(false)
  }, 180_000)

  it('refuses a malformed window before anything is uploaded, and warns about a tag no target carries', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'])
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    const bad = await fleet.deploy(v1, 'tag:lab', 'app-v1', ['--window', 'lab=22:00-25:00'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain(
      '--window: window "22:00-25:00" for tag "lab": the end "25:00" is not a time of day',
    )
    const idle = await fleet.deploy(v1, 'tag:lab', 'app-v1', ['--window', 'labs=22:00-04:00', '--no-watch'])
    expect(idle.code, idle.stderr).toBe(0)
    expect(idle.stderr).toContain('warning: no target machine carries tag:labs')
  }, 120_000)

  it('the agent refuses a time zone it does not know, before it starts anything', async () => {
    const r = await runCli(['agent', '--state', join(fleet.dir, 'tz'), '--timezone', 'Mars/Olympus'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('"Mars/Olympus" is not a time zone this system knows')
  })
})
