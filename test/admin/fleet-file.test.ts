/**
 * `fleetmesh plan` and `apply` on a fleet file against a real coordinator and
 * agents: plan lists additions, unlisted machines, tag changes and new
 * generations and exits 3 while there is work; apply issues tokens (to files,
 * never printed) and rolls each channel out; once the new machine enrolls,
 * plan finds nothing to do and exits 0. An admin scoped to one tag cannot
 * apply changes outside it.
 */
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { FleetPlan } from '../../admin/fleet-plan.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { grantAdmin } from '../coordinator/scoped-admin.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

/** A fleet file in the fleet's directory, with the archive at a path relative to it. */
async function fleetFile(machines: Record<string, unknown>): Promise<string> {
  const path = join(fleet.dir, 'fleet.json')
  const doc = {
    fleet: 'acme',
    groups: { edge: ['lab', 'eu'] },
    channels: { stable: { archive: 'app-1.tar.gz', generation: 'app-1', healthCheck: './health' } },
    machines,
  }
  await writeFile(path, `${JSON.stringify(doc, null, 2)}\n`)
  return path
}

async function planJson(path: string): Promise<{ code: number | null; plan: FleetPlan }> {
  const r = await fleet.cli(['plan', path, '--json'])
  if (r.code !== 0 && r.code !== 3) throw new Error(`plan exited ${r.code}: ${r.stderr}`)
  return { code: r.code, plan: JSON.parse(r.stdout) as FleetPlan }
}

const byName = (plan: FleetPlan, name: string) => plan.machines.find((m) => m.machine === name)

describe('plan and apply', () => {
  it('plans additions, unlisted machines and tag changes, applies them, then has nothing to do', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'])
    await fleet.enrollAgent('old-1', ['lab'])
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    await writeFile(join(fleet.dir, 'app-1.tar.gz'), await readFile(archive))

    // edge-1 gains "eu" through the group: a tag change (applied in fleet-tags.test.ts)
    const withTagChange = await fleetFile({
      'edge-1': { tags: ['lab'], groups: ['edge'], channel: 'stable' },
      'edge-2': { groups: ['edge'], channel: 'stable', meta: { site: 'berlin' } },
    })
    const first = await planJson(withTagChange)
    expect(first.code).toBe(3)
    expect(byName(first.plan, 'edge-1')).toMatchObject({
      action: 'change',
      tagsAdded: ['eu'],
      tagsRemoved: [],
      current: null,
      desired: 'app-1',
      deploy: true,
    })
    expect(byName(first.plan, 'edge-2')).toMatchObject({ action: 'enroll', tagsAdded: ['eu', 'lab'] })
    expect(byName(first.plan, 'old-1')).toMatchObject({ action: 'unlisted' })
    expect(first.plan.changes).toBe(2)
    const human = await fleet.cli(['plan', withTagChange])
    expect(human.code).toBe(3)
    expect(human.stdout).toMatch(/~ edge-1\s+tags \+eu; \(none\) → app-1 \(channel stable\)/)
    expect(human.stdout).toMatch(/\+ edge-2\s+enroll \(token with tags eu, lab\)/)
    expect(human.stdout).toContain('2 machines to change')

    const tokens = join(fleet.dir, 'tokens')

    // without the tag change: tokens for the new machine, and the channel rolled out
    const path = await fleetFile({
      'edge-1': { tags: ['lab'], channel: 'stable' },
      'edge-2': { groups: ['edge'], channel: 'stable' },
      'old-1': { tags: ['lab'], channel: null },
    })
    const applied = await fleet.cli(['apply', path, '--tokens', tokens, '--timeout', '60s'])
    expect(applied.code, applied.stdout + applied.stderr).toBe(0)
    const tokenFile = join(tokens, 'edge-2.token')
    const token = (await readFile(tokenFile, 'utf8')).trim()
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o600)
    expect(applied.stdout + applied.stderr).not.toContain(token)
    expect(applied.stderr).toContain(`edge-2: enrollment token written to ${tokenFile}`)
    expect(applied.stdout).toContain('settled: 1 committed, 0 not')

    const pending = await planJson(path)
    expect(pending.code).toBe(3)
    expect(pending.plan.machines.map((m) => [m.machine, m.action])).toEqual([
      ['edge-1', 'none'],
      ['edge-2', 'enroll'],
      ['old-1', 'none'],
    ])

    // the new machine enrolls with its token and gets the channel's generation it was signed for
    const agent = fleet.startAgent('edge-2', ['--token', `@${tokenFile}`])
    await agent.waitFor((e) => e.event === 'status' && e.state === 'committed', 60_000, 'edge-2 committed')
    const done = await fleet.cli(['plan', path])
    expect(done.code, done.stdout + done.stderr).toBe(0)
    expect(done.stdout).toContain('nothing to do: the fleet matches the file')
    const again = await fleet.cli(['apply', path, '--json'])
    expect(again.code, again.stderr).toBe(0)
  }, 180_000)

  it('rolls a channel with a rollout policy out in waves', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('web-1', ['web'])
    await fleet.enrollAgent('web-2', ['web'])
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    await writeFile(join(fleet.dir, 'app-1.tar.gz'), await readFile(archive))
    const path = join(fleet.dir, 'waves.json')
    await writeFile(
      path,
      JSON.stringify({
        channels: {
          stable: { archive: 'app-1.tar.gz', generation: 'app-1', rollout: { waves: ['1', '100%'] } },
        },
        machines: {
          'web-1': { tags: ['web'], channel: 'stable' },
          'web-2': { tags: ['web'], channel: 'stable' },
        },
      }),
    )
    const before = await planJson(path)
    expect(before.plan.machines.map((m) => m.wave).sort()).toEqual([1, 2])
    const applied = await fleet.cli(['apply', path, '--timeout', '90s'])
    expect(applied.code, applied.stdout + applied.stderr).toBe(0)
    expect(applied.stderr).toContain('in waves (waves 1, 100%')
    const after = await fleet.cli(['plan', path])
    expect(after.code, after.stdout).toBe(0)
  }, 180_000)

  it('refuses an admin scoped to one tag anything outside it, before changing anything', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('lab-1', ['lab'])
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    await writeFile(join(fleet.dir, 'app-1.tar.gz'), await readFile(archive))
    const labAdmin = await grantAdmin(fleet, 'lab-admin', ['--caps', 'enroll,deploy,read', '--tags', 'lab'])
    const path = await fleetFile({
      'lab-1': { tags: ['lab'], channel: 'stable' },
      'shop-1': { tags: ['shop'], channel: 'stable' },
    })
    const tokens = join(fleet.dir, 'tokens')
    const r = await labAdmin.cli('apply', path, '--tokens', tokens)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('apply refused, nothing was changed')
    expect(r.stderr).toContain('enroll shop-1:')
    expect(r.stderr).toContain('deploy app-1 to shop-1:')
    expect(r.stderr).not.toContain('lab-1:')
    await expect(stat(tokens)).rejects.toThrow()
    const audit = await fleet.json<{ records: { action: string }[] }>(['audit'])
    expect(audit.records.map((x) => x.action)).not.toContain('submit-manifest')
    expect(audit.records.map((x) => x.action)).not.toContain('upload-blob')
  }, 120_000)
})
