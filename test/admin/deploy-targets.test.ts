// `deploy --to` against real processes: `all` is every machine enrolled now,
// expanded by the admin before it signs; targets that match no enrolled machine
// fail at once, before anything is uploaded or signed.
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
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
  records: { action: string; outcome: string }[]
}

describe('deploy --to', () => {
  it('--to all reaches every machine enrolled now', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'])
    await fleet.enrollAgent('edge-2', ['shop'])
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    const r = await fleet.deploy(archive, 'all', 'v1', ['--timeout', '60s'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stderr).toContain('for 2 machine(s): edge-1, edge-2')
    expect(r.stderr).not.toContain('not enrolled')
    expect(r.stdout).toContain('settled: 2 committed, 0 not')

    // `audit` names the admin from its certificate, and claims verification only with --verify
    const plain = await fleet.cli(['audit'])
    expect(plain.code, plain.stderr).toBe(0)
    expect(plain.stdout).not.toContain('audit log verified')
    expect(plain.stdout).toContain('not verified: add --verify')
    expect(plain.stdout).toMatch(/submit-manifest\s+owner\s/)
    const verified = await fleet.cli(['audit', '--verify'])
    expect(verified.code, verified.stderr).toBe(0)
    expect(verified.stdout).toContain('audit log verified')
  }, 120_000)

  it('fails at once when the targets match no enrolled machine, naming the known tags', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'])
    await fleet.enrollAgent('edge-2', ['shop'])
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    // returning at all shows it did not wait: a deploy watches for up to 15 min, the test allows 2
    const r = await fleet.deploy(archive, 'tag:nope', 'v1')
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('matches no enrolled machine')
    expect(r.stderr).toContain('edge-1, edge-2')
    expect(r.stderr).toContain('tag:lab, tag:shop')
    expect(r.stderr).toContain('--allow-future-machines')
    expect(r.stderr).not.toMatch(/uploaded \d/)
    const audit = await fleet.json<AuditJson>(['audit'])
    expect(audit.records.map((x) => x.action)).not.toContain('submit-manifest')
    expect(audit.records.map((x) => x.action)).not.toContain('upload-blob')

    // the operator can still sign for machines a tag will reach later
    const later = await fleet.deploy(archive, 'tag:nope', 'v1', ['--allow-future-machines', '--no-watch'])
    expect(later.code, later.stderr).toBe(0)
    expect(later.stderr).toContain('(none enrolled yet)')
  }, 120_000)
})
