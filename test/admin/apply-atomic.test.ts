/**
 * A fleet file's apply is one operation at the coordinator (coordinator/admin-apply.ts):
 * tag records and rollouts arrive in one `apply` request and are stored all or
 * none. With a real coordinator and agents: a request whose last rollout is
 * refused leaves the tags and desired states it carried untouched, and is
 * audited as one refusal; the same request signed right is stored whole, audited
 * as one record, and reaches the agents, tags first.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AdminClient, AdminRequestError } from '../../admin/client.ts'
import { manifestSigner, randomId } from '../../admin/commands/rollout.ts'
import { loadAdminHome } from '../../admin/home.ts'
import { fileSource } from '../../admin/upload.ts'
import { sealMachineTags } from '../../protocol/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

interface AuditRecord {
  action: string
  outcome: string
  detail: string
}
const audit = async () => (await fleet.json<{ records: AuditRecord[] }>(['audit'])).records

describe('apply: tag records and rollouts stored all or none', () => {
  it('a refused rollout leaves everything as it was; signed right, all of it lands and reaches the agents', async () => {
    await fleet.startCoordinator()
    const edge1 = await fleet.enrollAgent('edge-1', ['lab'])
    await fleet.enrollAgent('edge-2', ['lab'])
    // a first release to edge-2, which also puts the archive on the coordinator
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    const first = await fleet.deploy(archive, 'edge-2', 'v1', ['--timeout', '60s'])
    expect(first.code, first.stderr).toBe(0)
    const before = await fleet.machines()
    const desiredBefore = new Map(before.map((m) => [m.name, m.desiredManifestId]))

    const home = await loadAdminHome(fleet.home)
    const client = await AdminClient.connect(home)
    try {
      const { sha256, size } = await fileSource(archive)
      const fields = (machine: string) => ({
        generation: 'v2',
        targets: { machines: [machine], tags: [] },
        payload: { kind: 'archive' as const, sha256, size, sources: [{ kind: 'coordinator' as const }] },
      })
      const record = sealMachineTags(
        {
          v: 1,
          fleetId: home.fleet.fleetId,
          machine: 'edge-1',
          tags: ['eu', 'lab'],
          version: 1,
          issuedAt: Date.now(),
        },
        home.key,
        home.chain,
      )
      const toEdge1 = await manifestSigner(client, fields('edge-1'), randomId())
      const toEdge2 = await manifestSigner(client, fields('edge-2'), randomId())
      const { maxSequence } = await client.fleetInfo()

      // the second rollout reuses the first one's sequence: the coordinator refuses it,
      // after it has admitted the tag record and the first rollout
      const refused = await client
        .applyFleet(
          [record],
          [
            { envelope: toEdge1(maxSequence + 1), waves: null },
            { envelope: toEdge2(maxSequence + 1), waves: null },
          ],
        )
        .catch((err: unknown) => err)
      expect(refused).toBeInstanceOf(AdminRequestError)
      expect(refused).toMatchObject({ code: 'stale-sequence' })
      const unchanged = await fleet.machines()
      expect(unchanged.find((m) => m.name === 'edge-1')?.tags).toEqual(['lab'])
      expect(new Map(unchanged.map((m) => [m.name, m.desiredManifestId]))).toEqual(desiredBefore)
      expect((await client.fleetInfo()).maxSequence).toBe(maxSequence)

      // signed right: one operation, tags first
      const took = edge1.waitFor((e) => e.event === 'tags', 30_000, 'edge-1 took its new tags')
      const applied = await client.applyFleet(
        [record],
        [
          { envelope: toEdge1(maxSequence + 1), waves: null },
          { envelope: toEdge2(maxSequence + 2), waves: null },
        ],
      )
      expect(applied.tags).toEqual([{ machine: 'edge-1', from: ['lab'], to: ['eu', 'lab'], version: 1 }])
      expect(applied.rollouts.map((r) => [r.sequence, r.machines])).toEqual([
        [maxSequence + 1, ['edge-1']],
        [maxSequence + 2, ['edge-2']],
      ])
      expect(await took).toMatchObject({ tags: ['eu', 'lab'] })
      const after = await fleet.machines()
      expect(after.find((m) => m.name === 'edge-1')?.tags).toEqual(['eu', 'lab'])
      expect(after.map((m) => m.desiredManifestId)).toEqual(applied.rollouts.map((r) => r.manifestId))
      const applies = (await audit()).filter((r) => r.action === 'apply')
      expect(applies.map((r) => r.outcome)).toEqual(['denied', 'ok'])
      expect(applies[0]?.detail).toContain('stale-sequence')
      expect(applies[1]?.detail).toContain('edge-1 [lab] → [eu, lab] (tag record version 1)')
      for (const r of applied.rollouts) expect(applies[1]?.detail).toContain(`manifest ${r.manifestId}`)
    } finally {
      await client.close()
    }
  }, 180_000)
})
