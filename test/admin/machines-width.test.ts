// `fleetmesh machines` on an 80-column terminal ($COLUMNS=80): every line fits and
// each machine keeps one row, its name whole; --json keeps every value whole.
// Real processes on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { runCli, TestFleet } from '../../testkit/harness.ts'

// in the order the coordinator lists them (sorted)
const TAGS = ['canary-group-b', 'eu-west-1', 'lab', 'storefront']
const GENERATION = 'storefront-backend-2026.11.30-build.4711'

let fleet: TestFleet
beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  await fleet.enrollAgent('edge-1', TAGS)
  await fleet.enrollAgent('edge-2', TAGS)
  const archive = await makeArchive(fleet.dir, { version: 'v1' })
  const r = await fleet.deploy(archive, 'tag:lab', GENERATION)
  expect(r.code, r.stderr).toBe(0)
}, 120_000)
afterAll(async () => {
  await fleet.stop()
})

describe('machines at 80 columns', () => {
  it('fits every line and keeps a row per machine', async () => {
    const r = await runCli(['--home', fleet.home, 'machines'], { COLUMNS: '80' })
    expect(r.code, r.stderr).toBe(0)
    const lines = r.stdout.trimEnd().split('\n')
    expect(
      lines.filter((l) => l.length > 80),
      r.stdout,
    ).toEqual([])
    expect(lines[0]).toMatch(/^NAME\s+TAGS\s+ONLINE\s+CURRENT\s+DESIRED\s+STATE\s+LAST SEEN\s+PATH$/)
    for (const name of ['edge-1', 'edge-2'])
      expect(
        lines.filter((l) => l.startsWith(`${name} `)),
        r.stdout,
      ).toHaveLength(1)
    expect(r.stdout).toContain('…')
  })

  it('shortens nothing in --json', async () => {
    const r = await runCli(['--home', fleet.home, 'machines', '--json'], { COLUMNS: '80' })
    const rows = JSON.parse(r.stdout) as { tags: string[]; currentGeneration: string }[]
    expect(rows.map((m) => [m.tags, m.currentGeneration])).toEqual([
      [TAGS, GENERATION],
      [TAGS, GENERATION],
    ])
  })

  it('piped without $COLUMNS, rows are whole', async () => {
    const r = await runCli(['--home', fleet.home, 'machines'], { COLUMNS: '' })
    expect(r.stdout).toContain(TAGS.join(','))
    expect(r.stdout).toContain(GENERATION)
  })
})
