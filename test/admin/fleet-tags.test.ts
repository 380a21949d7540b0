/**
 * Tag changes of enrolled machines through `fleetmesh apply`, with real
 * coordinator and agent processes: the admin signs one tag record per machine,
 * the coordinator checks and stores them (all or none, audited, kept across a
 * restart) and passes each to its agent, which checks it again and keeps the new
 * tags in enrollment.json; a deploy to a new tag then reaches the machine. An
 * admin scoped to one tag cannot retag a machine outside it, neither through
 * apply nor by sending a record of its own to the coordinator.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AdminClient, AdminRequestError } from '../../admin/client.ts'
import { loadAdminHome } from '../../admin/home.ts'
import { sealMachineTags } from '../../protocol/index.ts'
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

async function fleetFile(name: string, machines: Record<string, unknown>): Promise<string> {
  const path = join(fleet.dir, name)
  await writeFile(path, `${JSON.stringify({ fleet: 'acme', channels: {}, machines }, null, 2)}\n`)
  return path
}

interface View {
  name: string
  tags: string[]
}
const tagsOf = async (machine: string) =>
  (await fleet.json<View[]>(['machines'])).find((m) => m.name === machine)?.tags
const enrollmentFile = (machine: string) => join(fleet.agentState(machine), 'enrollment.json')

interface AuditRecord {
  action: string
  outcome: string
  detail: string
}
const audit = async () => (await fleet.json<{ records: AuditRecord[] }>(['audit'])).records

describe('apply changes the tags of enrolled machines', () => {
  it('signs, stores, audits and delivers them; deploys reach the new tag; a restart keeps them', async () => {
    await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', ['lab'])
    const path = await fleetFile('fleet.json', { 'edge-1': { tags: ['lab', 'eu'], channel: null } })

    const before = await fleet.cli(['plan', path])
    expect(before.code).toBe(3)
    expect(before.stdout).toMatch(/~ edge-1\s+tags \+eu/)

    const taken = agent.waitFor((e) => e.event === 'tags', 30_000, 'edge-1 took its new tags')
    const applied = await fleet.cli(['apply', path])
    expect(applied.code, applied.stdout + applied.stderr).toBe(0)
    expect(applied.stderr).toContain('edge-1: tags [lab] → [eu, lab]')
    expect(await taken).toMatchObject({ tags: ['eu', 'lab'], version: 1 })
    expect(await tagsOf('edge-1')).toEqual(['eu', 'lab'])
    const enrollment = JSON.parse(await readFile(enrollmentFile('edge-1'), 'utf8'))
    expect(enrollment).toMatchObject({ machine: 'edge-1', tags: ['eu', 'lab'], tagsVersion: 1 })

    // one apply: the tag records and the rollouts in one audited operation
    const changes = (await audit()).filter((r) => r.action === 'apply')
    expect(changes).toHaveLength(1)
    expect(changes[0]).toMatchObject({ outcome: 'ok' })
    expect(changes[0]?.detail).toContain('edge-1 [lab] → [eu, lab] (tag record version 1)')

    const after = await fleet.cli(['plan', path])
    expect(after.code, after.stdout).toBe(0)
    expect(after.stdout).toContain('nothing to do: the fleet matches the file')

    // the agent checks a manifest for tag "eu" against the tags it took
    const archive = await makeArchive(fleet.dir, { version: 'eu-1' })
    const deployed = await fleet.deploy(archive, 'tag:eu', 'eu-1', ['--timeout', '60s'])
    expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
    expect(deployed.stdout).toContain('settled: 1 committed, 0 not')

    // a restarted coordinator keeps the tags, and the agent takes the record it sends again as the one it has
    await fleet.coordinator?.kill('SIGKILL')
    const seen = agent.events.length
    await fleet.startCoordinator()
    // the coordinator sends the tag record before the desired manifest, and the agent takes it before reading on
    await agent.waitFor(
      (e) => e.event === 'manifest' && agent.events.indexOf(e) >= seen,
      30_000,
      'edge-1 sent its manifest again',
    )
    expect(await tagsOf('edge-1')).toEqual(['eu', 'lab'])
    expect(agent.events.filter((e) => e.event === 'tags-refused')).toEqual([])
    expect((await fleet.cli(['plan', path])).code).toBe(0)
  }, 180_000)

  it('refuses an admin scoped to one tag a retag outside it, in apply and at the coordinator', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('prod-1', ['prod'])
    await fleet.enrollAgent('mixed-1', ['lab', 'prod'])
    const labAdmin = await grantAdmin(fleet, 'lab-admin', ['--caps', 'enroll,read', '--tags', 'lab'])

    // apply: dropping "prod" from a machine it sees through "lab"
    const path = await fleetFile('lab.json', { 'mixed-1': { tags: ['lab'], channel: null } })
    const r = await labAdmin.cli('apply', path)
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain('apply refused, nothing was changed')
    expect(r.stderr).toContain('mixed-1: tags -prod: old-tags-out-of-scope')

    // the coordinator: a record of its own moving prod-1 into lab
    const home = await loadAdminHome(labAdmin.home)
    const client = await AdminClient.connect(home)
    try {
      const record = sealMachineTags(
        {
          v: 1,
          fleetId: home.fleet.fleetId,
          machine: 'prod-1',
          tags: ['lab'],
          version: 1,
          issuedAt: Date.now(),
        },
        home.key,
        home.chain,
      )
      const refused = await client.setTags([record]).catch((err: unknown) => err)
      expect(refused).toBeInstanceOf(AdminRequestError)
      expect(refused).toMatchObject({ code: 'old-tags-out-of-scope' })
    } finally {
      await client.close()
    }
    expect(await tagsOf('prod-1')).toEqual(['prod'])
    expect(await tagsOf('mixed-1')).toEqual(['lab', 'prod'])
    const denied = (await audit()).filter((x) => x.action === 'set-tags')
    expect(denied.map((x) => x.outcome)).toEqual(['denied'])
    expect(denied[0]?.detail).toContain('old-tags-out-of-scope')
    expect(JSON.parse(await readFile(enrollmentFile('prod-1'), 'utf8')).tags).toEqual(['prod'])
  }, 120_000)
})
