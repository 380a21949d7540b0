/**
 * A fleet file's nixMap channels, refused offline before anything changes
 * (admin/nix-map.ts channelNixMaps, admin/fleet-file.ts): a closure map must
 * name exactly its channel's machines (plan and apply refuse it before they
 * contact any coordinator). A nixMap channel may roll out in waves: its map then
 * goes out as one manifest carrying every machine's closure.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { channelPolicy } from '../../admin/fleet-channel.ts'
import { FleetFileError, parseFleetFile } from '../../admin/fleet-file.ts'
import { resolveFleet } from '../../admin/fleet-resolve.ts'
import { channelNixMaps } from '../../admin/nix-map.ts'
import { runCli } from '../../testkit/harness.ts'

const PATH_1 = '/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-edge-1'
const PATH_2 = '/nix/store/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-edge-2'

/** Line 3 holds the channel, line 4 its rollout when there is one. */
const fleetText = (rollout = false) =>
  [
    '{',
    '  "channels": {',
    '    "hosts": {"nixMap": "closures.json", "generation": "nixos-1"' +
      (rollout ? ',\n      "rollout": {"waves": ["1", "100%"]}' : '') +
      '}',
    '  },',
    '  "machines": {',
    '    "edge-1": {"channel": "hosts"},',
    '    "edge-2": {"channel": "hosts"},',
    '    "kiosk-1": {}',
    '  }',
    '}',
  ].join('\n')

describe('nixMap channels in a fleet file', () => {
  let dir: string
  let fleetPath: string
  const map = (entries: Record<string, string>) =>
    writeFile(join(dir, 'closures.json'), JSON.stringify(entries))
  const maps = () => {
    const file = parseFleetFile(fleetPath, fleetText())
    return channelNixMaps(file, resolveFleet(file))
  }
  async function refusal(): Promise<FleetFileError> {
    const err = await maps().then(
      () => new Error('the map was accepted'),
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(FleetFileError)
    return err as FleetFileError
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fleet-nix-map-'))
    fleetPath = join(dir, 'fleet.json')
    await writeFile(fleetPath, fleetText())
  })

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('reads the map relative to the fleet file, by channel', async () => {
    await map({ 'edge-2': PATH_2, 'edge-1': PATH_1 })
    expect([...((await maps()).get('hosts') ?? [])]).toEqual([
      ['edge-1', PATH_1],
      ['edge-2', PATH_2],
    ])
  })

  it("refuses a map that lacks one of the channel's machines, naming the file, field and machine", async () => {
    await map({ 'edge-1': PATH_1 })
    const err = await refusal()
    expect(err.field).toBe('channels.hosts.nixMap')
    expect(err.line).toBe(3)
    expect(err.message).toContain(`${fleetPath}:3:`)
    expect(err.message).toContain('closures.json has no closure for machine edge-2 of channel hosts')
  })

  it('refuses a map entry for a machine that does not follow the channel', async () => {
    await map({ 'edge-1': PATH_1, 'edge-2': PATH_2, 'kiosk-1': PATH_1 })
    const err = await refusal()
    expect(err.field).toBe('channels.hosts.nixMap')
    expect(err.message).toContain('closures.json names machine kiosk-1, which does not follow channel hosts')
  })

  it('takes a nixMap channel with a rollout in waves', () => {
    const file = parseFleetFile('fleet.json', fleetText(true))
    const hosts = file.channels.hosts
    expect(hosts?.nixMap).toBe('closures.json')
    const policy = hosts === undefined ? undefined : channelPolicy(file, 'hosts', hosts)
    expect(policy?.waves).toEqual([{ count: 1 }, { percent: 100 }])
  })

  it('plan and apply refuse a bad map with exit 2 before contacting a coordinator, in waves too', async () => {
    await map({ 'edge-1': PATH_1 })
    const home = join(dir, 'no-admin-home')
    const [plan, apply] = await Promise.all([
      runCli(['--home', home, 'plan', fleetPath]),
      runCli(['--home', home, 'apply', fleetPath]),
    ])
    for (const r of [plan, apply]) {
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toContain('channels.hosts.nixMap: closures.json has no closure for machine edge-2')
    }
    const waves = join(dir, 'waves.json')
    await writeFile(waves, fleetText(true))
    const r = await runCli(['--home', home, 'apply', waves])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain('channels.hosts.nixMap: closures.json has no closure for machine edge-2')
  })
})
