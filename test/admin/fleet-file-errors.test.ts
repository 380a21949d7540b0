/**
 * The fleet file read and resolved offline (admin/fleet-file.ts,
 * fleet-resolve.ts): every malformed file and every conflict is an error that
 * names the file, the line and the field; `explain` and `inventory` print the
 * resolution with each value's source.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FleetFileError, parseFleetFile } from '../../admin/fleet-file.ts'
import { planFleet } from '../../admin/fleet-plan.ts'
import { resolveFleet } from '../../admin/fleet-resolve.ts'
import type { MachineView } from '../../protocol/index.ts'
import { runCli } from '../../testkit/harness.ts'

/** The error `text` gets as fleet.json: parse and resolve. */
function failure(text: string): FleetFileError {
  try {
    resolveFleet(parseFleetFile('fleet.json', text))
  } catch (err) {
    if (err instanceof FleetFileError) return err
    throw err
  }
  throw new Error('the file was accepted')
}

const CHANNELS = `"channels": {
    "stable": {"archive": "app-1.tar.gz", "generation": "app-1"},
    "beta": {"archive": "app-2.tar.gz", "generation": "app-2"}
  }`

describe('malformed fleet files', () => {
  const cases: [string, string, number, string, RegExp][] = [
    ['bad JSON', '{\n  "machines": {\n    "a": {},\n  }\n}', 4, '', /not valid JSON/],
    [
      'an unknown field',
      '{\n  "machines": {\n    "web-1": {\n      "tag": ["x"]\n    }\n  }\n}',
      4,
      'machines.web-1.tag',
      /unknown field "tag"/,
    ],
    [
      'a bad tag',
      '{\n  "machines": {\n    "web-1": {\n      "tags": ["ok",\n        "Not OK"]\n    }\n  }\n}',
      5,
      'machines.web-1.tags[1]',
      /lowercase/,
    ],
    [
      'a bad machine name',
      '{\n  "machines": {\n    "Web_1": {}\n  }\n}',
      3,
      'machines.Web_1',
      /not a valid name/,
    ],
    [
      'a missing generation',
      `{\n  "channels": {\n    "stable": {"archive": "a.tar"}\n  },\n  "machines": {}\n}`,
      3,
      'channels.stable.generation',
      /./,
    ],
    [
      'a channel with two payloads',
      `{\n  "channels": {\n    "stable": {"archive": "a.tar", "nixMap": "m.json", "generation": "g"}\n  },\n  "machines": {}\n}`,
      3,
      'channels.stable',
      /exactly one payload/,
    ],
    [
      'an unknown channel',
      `{\n  ${CHANNELS},\n  "machines": {\n    "web-1": {"channel": "nightly"}\n  }\n}`,
      7,
      'machines.web-1.channel',
      /unknown channel "nightly"/,
    ],
    [
      'an unknown group',
      `{\n  "groups": {"edge": ["lab"]},\n  "machines": {\n    "web-1": {"groups": ["edge",\n      "core"]}\n  }\n}`,
      5,
      'machines.web-1.groups[1]',
      /unknown group "core"/,
    ],
    [
      'a bad tag in a group written as a list',
      '{\n  "groups": {\n    "edge": ["lab", "EU"]\n  },\n  "machines": {}\n}',
      3,
      'groups.edge[1]',
      /lowercase/,
    ],
    [
      'a bad wave share',
      `{\n  "channels": {"stable": {"archive": "a.tar", "generation": "g",\n    "rollout": {"waves": ["1", "half"]}}},\n  "machines": {}\n}`,
      3,
      'channels.stable.rollout.waves[1]',
      /percentage/,
    ],
    ['no machines', '{"groups": {}}', 1, 'machines', /./],
    [
      'the reserved machine name "all"',
      '{\n  "machines": {\n    "all": {}\n  }\n}',
      3,
      'machines.all',
      /reserved/,
    ],
  ]
  for (const [what, text, line, field, problem] of cases)
    it(`names the file, line and field for ${what}`, () => {
      const err = failure(text)
      expect(err.line, err.message).toBe(line)
      expect(err.field).toBe(field)
      expect(err.message).toMatch(new RegExp(`^fleet\\.json:${line}:\\d+: `))
      if (field !== '') expect(err.message).toContain(`${field}: `)
      expect(err.message).toMatch(problem)
    })
})

describe('combining entries', () => {
  const text = (edgeOverride: boolean, own = '') => `{
  ${CHANNELS},
  "defaults": {"channel": "stable", "tags": ["managed"], "meta": {"site": "hq", "rack": 1}},
  "groups": {
    "edge": {"tags": ["lab"], "channel": "beta", "meta": {"site": "berlin"}${edgeOverride ? ', "override": true' : ''}},
    "eu": {"tags": ["eu", "lab"], "channel": "stable"}
  },
  "machines": {
    "edge-1": {"groups": ["edge", "eu"]${own}},
    "core-1": {"tags": ["core"]}
  }
}`

  it('refuses two groups that set one machine different channels, naming both', () => {
    const err = failure(text(false))
    expect(err.field).toBe('machines.edge-1.groups')
    expect(err.line).toBe(12)
    expect(err.message).toContain('conflicting channel')
    expect(err.message).toContain('groups.edge.channel (fleet.json:8:')
    expect(err.message).toContain('groups.eu.channel (fleet.json:9:')
    expect(err.message).toContain('"override": true')
  })

  it('lets the override group win, the machine entry win over both, and the defaults fill in', () => {
    const [core, edge] = resolveFleet(parseFleetFile('fleet.json', text(true)))
    expect(edge?.channel).toMatchObject({ value: 'beta', source: 'groups.edge.channel' })
    expect(edge?.channel.at).toMatch(/^fleet\.json:8:\d+$/)
    expect(edge?.tags[1]?.at.map((at) => at.replace(/:\d+$/, ''))).toEqual(['fleet.json:8', 'fleet.json:9'])
    expect(edge?.tags.map(({ tag, sources }) => ({ tag, sources }))).toEqual([
      { tag: 'eu', sources: ['groups.eu.tags[0]'] },
      { tag: 'lab', sources: ['groups.edge.tags[0]', 'groups.eu.tags[1]'] },
      { tag: 'managed', sources: ['defaults.tags[0]'] },
    ])
    expect(edge?.meta).toMatchObject({
      rack: { value: 1, source: 'defaults.meta.rack' },
      site: { value: 'berlin', source: 'groups.edge.meta.site' },
    })
    expect(core?.channel).toMatchObject({ value: 'stable', source: 'defaults.channel' })
    const [, own] = resolveFleet(parseFleetFile('fleet.json', text(false, ', "channel": "stable"')))
    expect(own?.channel).toMatchObject({ value: 'stable', source: 'machines.edge-1.channel' })
  })
})

describe('explain and inventory', () => {
  let dir: string
  let file: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-fleet-'))
    file = join(dir, 'fleet.json')
    await writeFile(
      file,
      JSON.stringify({
        fleet: 'acme',
        groups: { edge: { tags: ['lab', 'eu'], channel: 'stable' } },
        channels: {
          stable: { archive: 'app.tar.gz', generation: 'app-1', rollout: { waves: ['1', '100%'] } },
        },
        machines: { 'edge-1': { groups: ['edge'], tags: ['lab'], meta: { site: 'berlin' } }, 'core-1': {} },
      }),
    )
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('explain shows each value with the entry it came from', async () => {
    const r = await runCli(['explain', 'edge-1', '--file', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(
      /lab\s+from machines\.edge-1\.tags\[0\] \(\S+fleet\.json:1:\d+\), groups\.edge\.tags\[0\] \(/,
    )
    expect(r.stdout).toMatch(/eu\s+from groups\.edge\.tags\[1\]/)
    expect(r.stdout).toMatch(/channel: stable {2}from groups\.edge\.channel \(\/.*fleet\.json:1:\d+\)/)
    expect(r.stdout).toContain('generation app-1  from channels.stable.generation')
    expect(r.stdout).toMatch(/site\s+= "berlin" {2}from machines\.edge-1\.meta\.site/)
    const missing = await runCli(['explain', 'nope', '--file', file])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('has no machine "nope"; its machines: core-1, edge-1')
  })

  it('inventory --json gives Nix the machine names and tags', async () => {
    const r = await runCli(['inventory', '--file', file, '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({
      fleet: 'acme',
      machines: {
        'core-1': { tags: [], groups: [], channel: null, generation: null, meta: {} },
        'edge-1': {
          tags: ['eu', 'lab'],
          groups: ['edge'],
          channel: 'stable',
          generation: 'app-1',
          meta: { site: 'berlin' },
        },
      },
    })
  })

  it('a bad file fails the command with exit 2 and file:line: field', async () => {
    const bad = join(dir, 'bad.json')
    await writeFile(bad, '{\n  "machines": {\n    "edge-1": {"channel": "nightly"}\n  }\n}\n')
    const r = await runCli(['inventory', '--file', bad])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${bad}:3:16: machines.edge-1.channel: unknown channel "nightly"`)
  })
})

describe('waves in the plan', () => {
  const view = (name: string, tags: string[]): MachineView => ({
    name,
    peerId: 'x',
    tags,
    online: true,
    path: null,
    enrolledAt: 0,
    lastSeen: null,
    state: null,
    currentGeneration: null,
    desiredGeneration: null,
    manifestId: null,
    rolloutId: null,
    desiredManifestId: null,
    desiredRolloutId: null,
    progress: null,
    error: null,
    rebootRequired: false,
    reportedAt: null,
    agentVersion: null,
  })
  const text = (rollout: string) => `{
  "channels": {"stable": {"archive": "a.tar", "generation": "app-1",
    "rollout": ${rollout}}},
  "defaults": {"channel": "stable"},
  "machines": {"m-1": {}, "m-2": {}, "m-3": {}, "m-4": {"tags": ["canary"]}}
}`

  it('places the canary first and cuts the rest at the cumulative shares', () => {
    const file = parseFleetFile('fleet.json', text('{"waves": ["1", "50%", "100%"], "canaryTag": "canary"}'))
    const views = ['m-1', 'm-2', 'm-3'].map((n) => view(n, [])).concat(view('m-4', ['canary']))
    const plan = planFleet(file, resolveFleet(file), views)
    const waves = Object.fromEntries(plan.machines.map((m) => [m.machine, m.wave]))
    expect(waves['m-4']).toBe(1)
    expect(Object.values(waves).sort()).toEqual([1, 2, 3, 3])
    expect(plan.changes).toBe(4)
  })

  it('takes a soak of 0, as deploy --soak 0 does', () => {
    const file = parseFleetFile('fleet.json', text('{"waves": ["1", "100%"], "soak": "0"}'))
    expect(planFleet(file, resolveFleet(file), []).changes).toBe(4)
  })

  it('checks the rollout as deploy --waves does, naming the field', () => {
    const file = parseFleetFile('fleet.json', text('{"waves": ["1", "100%"], "soak": "8d"}'))
    expect(() => planFleet(file, resolveFleet(file), [])).toThrow(
      /^fleet\.json:2:16: channels\.stable: channels\.stable\.rollout\.soak must be at most 7d/,
    )
  })
})
