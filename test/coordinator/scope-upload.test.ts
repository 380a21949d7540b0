/**
 * Blob uploads and scope: a blob has no target, but uploading one needs
 * `deploy` on some machine or tag; and a blob another admin uploaded is not
 * disclosed to a scoped admin ("already stored", or usable in a manifest)
 * until it has sent the bytes itself. A real coordinator process; the admins
 * talk to it with the admin client over their own homes.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdminClient } from '../../admin/client.ts'
import { loadAdminHome } from '../../admin/home.ts'
import { bytesSource, uploadBlob } from '../../admin/upload.ts'
import { buildManifest, sealManifest, uploadResult } from '../../protocol/index.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { grantAdmin, type ScopedAdmin } from './scoped-admin.ts'

let fleet: TestFleet
const clients: AdminClient[] = []

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
}, 60_000)

afterAll(async () => {
  for (const c of clients.splice(0)) await c.close()
  await fleet.stop()
})

async function clientOf(home: string): Promise<AdminClient> {
  const client = await AdminClient.connect(await loadAdminHome(home))
  clients.push(client)
  return client
}

/** The coordinator's first answer to an upload announcement (the stream is then dropped). */
async function announce(client: AdminClient, bytes: Uint8Array) {
  const source = bytesSource(bytes)
  const fs = await client.open({ op: 'upload-blob', sha256: source.sha256, size: source.size })
  try {
    return await client.readResult(fs, uploadResult)
  } finally {
    fs.abort(new Error('only the first answer was wanted'))
  }
}

describe('upload-blob', () => {
  it('is refused to a deployer whose chain covers no machine or tag', async () => {
    const lead = await grantAdmin(fleet, 'lead', ['--caps', 'admin,deploy', '--tags', 'lab'])
    // Delegation never widens scope: lab ∩ prod is nothing, so this admin may deploy nowhere.
    const intern = await grantAdmin(fleet, 'intern', ['--caps', 'deploy', '--tags', 'prod'], lead)
    const client = await clientOf(intern.home)
    await expect(announce(client, randomBytes(100))).rejects.toMatchObject({
      code: 'out-of-scope',
      message: expect.stringMatching(/grants "deploy" on no machine or tag/),
    })
  }, 60_000)

  describe('for an admin scoped to tag lab', () => {
    let lab: ScopedAdmin
    let root: AdminClient
    let labClient: AdminClient

    beforeAll(async () => {
      lab = await grantAdmin(fleet, 'lab-deployer', ['--caps', 'deploy,read', '--tags', 'lab'])
      root = await clientOf(fleet.home)
      labClient = await clientOf(lab.home)
    }, 60_000)

    it('does not say that a blob another admin uploaded is stored until it sent the bytes', async () => {
      const bytes = randomBytes(50_000)
      expect(await uploadBlob(root, bytesSource(bytes))).toBe('uploaded')
      expect(await uploadBlob(root, bytesSource(bytes))).toBe('already-stored')

      // The same answer as for a blob nobody has: send it from the start.
      expect(await announce(labClient, bytes)).toEqual({ offset: 0, complete: false })
      expect(await announce(labClient, randomBytes(50_000))).toEqual({ offset: 0, complete: false })
      expect(await uploadBlob(labClient, bytesSource(bytes))).toBe('uploaded')
      // Now it has shown it holds them.
      expect(await uploadBlob(labClient, bytesSource(bytes))).toBe('already-stored')
    }, 60_000)

    it('cannot deploy a blob another admin uploaded without sending it', async () => {
      const theirs = randomBytes(2_000)
      expect(await uploadBlob(root, bytesSource(theirs))).toBe('uploaded')
      const submit = async (bytes: Uint8Array) => {
        const home = await loadAdminHome(lab.home)
        const source = bytesSource(bytes)
        const manifest = buildManifest({
          fleetId: 'test',
          sequence: (await labClient.fleetInfo()).maxSequence + 1,
          generation: 'web-1',
          targets: { machines: [], tags: ['lab'] },
          payload: {
            kind: 'archive',
            sha256: source.sha256,
            size: source.size,
            sources: [{ kind: 'coordinator' }],
          },
        })
        return labClient.submitManifest(sealManifest(manifest, home.key, home.chain))
      }
      const refused = await submit(theirs).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(refused).toMatchObject({
        code: 'blob-missing',
        message: expect.stringMatching(/upload it first/),
      })

      expect(await uploadBlob(labClient, bytesSource(theirs))).toBe('uploaded')
      expect((await submit(theirs)).unknown).toEqual([])
    }, 60_000)
  })
})
