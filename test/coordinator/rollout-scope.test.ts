/**
 * Rollouts in waves are seen and controlled only by admins whose certificate
 * covers all their machines, and controlled only with the deploy capability.
 * A real coordinator and agents; the other admins use the CLI with their own homes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { grantAdmin, type ScopedAdmin } from './scoped-admin.ts'

let fleet: TestFleet
let labDeployer: ScopedAdmin
let reader: ScopedAdmin
let rolloutId: string

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  await fleet.enrollAgent('edge-1', ['lab'])
  await fleet.enrollAgent('edge-2', ['prod'])
  labDeployer = await grantAdmin(fleet, 'lab-deployer', ['--caps', 'deploy,read', '--tags', 'lab'])
  reader = await grantAdmin(fleet, 'reader', ['--caps', 'read', '--all'])
  const archive = await makeArchive(fleet.dir, { version: 'v1' })
  const r = await fleet.deploy(archive, 'all', 'v1', [
    '--waves',
    '1,100%',
    '--soak',
    '1h',
    '--no-watch',
    '--json',
  ])
  expect(r.code, r.stderr).toBe(0)
  rolloutId = (JSON.parse(r.stdout) as { rolloutId: string }).rolloutId
}, 180_000)

afterAll(async () => {
  await fleet.stop()
})

describe('rollout ops and scope', () => {
  it('an admin covering only some of its machines neither sees nor controls it', async () => {
    const list = await labDeployer.cli('rollout', 'list', '--json')
    expect(list.code, list.stderr).toBe(0)
    expect(JSON.parse(list.stdout)).toEqual([])
    const pause = await labDeployer.cli('rollout', 'pause', rolloutId)
    expect(pause.code).not.toBe(0)
    expect(pause.stderr).toContain('unknown-rollout')
  })

  it('a reader of the whole fleet sees it but may not pause it', async () => {
    const show = await reader.cli('rollout', 'show', rolloutId, '--json')
    expect(show.code, show.stderr).toBe(0)
    expect(JSON.parse(show.stdout)).toMatchObject({ rolloutId, waves: 2 })
    const pause = await reader.cli('rollout', 'pause', rolloutId)
    expect(pause.code).not.toBe(0)
    expect(pause.stderr).toMatch(/deploy/)
  })

  it('the fleet admin pauses it, and the refusals and the pause are audited', async () => {
    const pause = await fleet.cli(['rollout', 'pause', rolloutId, '--json'])
    expect(pause.code, pause.stderr).toBe(0)
    expect(JSON.parse(pause.stdout)).toMatchObject({ state: 'paused' })
    const again = await fleet.cli(['rollout', 'pause', rolloutId])
    expect(again.stderr).toContain('rollout-state')
    const audit = await fleet.cli(['audit'])
    expect(audit.stdout).toMatch(/rollout-control.*denied|denied.*rollout-control/)
    expect(audit.stdout).toContain(`pause rollout ${rolloutId}`)
  })
})
