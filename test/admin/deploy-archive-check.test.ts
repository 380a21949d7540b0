// `deploy <file>` checks the payload is a tar or tar.gz that lists cleanly
// before anything is uploaded or signed: a file the agents would refuse
// (`bad-archive`) must not ship and fail only on the devices.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { inspectTarArchive, TarArchiveError } from '../../lib/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

interface AuditJson {
  records: { action: string }[]
}

async function refusalCode(path: string): Promise<string | undefined> {
  try {
    await inspectTarArchive(path)
    return undefined
  } catch (err) {
    if (!(err instanceof TarArchiveError)) throw err
    return err.code
  }
}

describe('deploy refuses a payload that is no tar archive', () => {
  it('refuses a non-tar file before uploading or signing anything', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1')
    const file = join(fleet.dir, 'app.tar.gz')
    await writeFile(file, 'just some text, not an archive\n'.repeat(40))
    const r = await fleet.deploy(file, 'edge-1', 'v1', ['--no-watch'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('app.tar.gz is neither a tar nor a gzip-compressed tar archive')
    expect(r.stderr).toContain('nothing was uploaded or signed')
    expect(r.stderr).not.toMatch(/bytes, sha256|uploaded \d/)
    const audit = await fleet.json<AuditJson>(['audit'])
    expect(audit.records.map((x) => x.action)).not.toContain('submit-manifest')
  })

  it('refuses a truncated tar.gz that tar cannot list', async () => {
    const good = await makeArchive(fleet.dir, { version: 'v1' })
    const bytes = await readFile(good)
    const truncated = join(fleet.dir, 'cut.tar.gz')
    await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)))
    expect(await refusalCode(good)).toBeUndefined()
    expect(await refusalCode(truncated)).toBe('unlistable')
    const r = await fleet.deploy(truncated, 'edge-1', 'v1', ['--no-watch'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('cut.tar.gz is not a readable tar archive')
  })
})
