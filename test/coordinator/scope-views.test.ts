/**
 * What an admin scoped to some machines sees of the rest of the fleet: no
 * `manifest` watch events for rollouts that reach none of its machines, and
 * fleet-info counts of its own machines only. A real coordinator and agents;
 * the lab admin asks with the CLI and with the admin client over its own home.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdminClient } from '../../admin/client.ts'
import { loadAdminHome } from '../../admin/home.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, TestFleet } from '../../testkit/harness.ts'
import { grantAdmin, type ScopedAdmin } from './scoped-admin.ts'

let fleet: TestFleet
let lab: ScopedAdmin

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  await fleet.enrollAgent('edge-1', ['lab'])
  await fleet.enrollAgent('edge-2', ['prod'])
  await fleet.enrollAgent('edge-3', ['prod'])
  lab = await grantAdmin(fleet, 'lab-viewer', ['--caps', 'read', '--tags', 'lab'])
}, 120_000)

afterAll(async () => {
  await fleet.stop()
})

/** Submits a rollout as the fleet's first admin, without watching it; its id. */
async function rollout(target: string, version: string): Promise<string> {
  const archive = await makeArchive(fleet.dir, { version })
  const r = await fleet.deploy(archive, target, `web-${version}`, ['--no-watch', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return (JSON.parse(r.stdout) as { rolloutId: string }).rolloutId
}

const manifestEvent = (e: Event) => (e as { type?: string }).type === 'manifest'

describe('watch, for an admin scoped to tag lab', () => {
  it('gets no manifest event for a rollout that reaches none of its machines', async () => {
    const watch = lab.start(['watch', '--json'])
    // The watch is live once it streams an event about a lab machine enrolled now.
    await fleet.enrollAgent('edge-4', ['lab'])
    await watch.waitFor(
      (e) => (e as { machine?: { name?: string } }).machine?.name === 'edge-4',
      30_000,
      'an event about edge-4',
    )

    const prod = await rollout('tag:prod', '1')
    const labRollout = await rollout('tag:lab', '2')
    // Events come in order: once the lab rollout's is there, the prod one's would have come first.
    const seen = await watch.waitFor(manifestEvent, 30_000, 'the lab rollout')
    expect(seen).toMatchObject({ rolloutId: labRollout, machines: ['edge-1', 'edge-4'] })
    expect(watch.events.filter(manifestEvent).map((e) => e.rolloutId)).not.toContain(prod)
  }, 120_000)
})

describe('fleet-info', () => {
  it('counts only the machines the caller covers', async () => {
    const client = await AdminClient.connect(await loadAdminHome(lab.home))
    try {
      const info = await client.fleetInfo()
      const visible = await client.machines()
      expect(visible.map((m) => m.name).sort()).toEqual(['edge-1', 'edge-4'])
      expect(info.machines).toBe(2)
      expect(info.online).toBe(visible.filter((m) => m.online).length)
    } finally {
      await client.close()
    }
    // The fleet's own admin still sees the whole fleet.
    const all = await AdminClient.connect(await loadAdminHome(fleet.home))
    try {
      expect((await all.fleetInfo()).machines).toBe(4)
    } finally {
      await all.close()
    }
  }, 60_000)
})
