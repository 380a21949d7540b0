/**
 * `fleetmesh apply` with a nixMap channel, through real processes and real
 * Nix: a coordinator, two agents with the nixos activator (each its own
 * profile), and a fleet file whose channel names a per-machine closure map.
 * plan lists both machines; apply pushes the closures from the local store
 * and submits one manifest per machine under one rollout id, as deploy
 * --nix-map does; each machine commits its own closure; plan is then clean.
 * Then deploy --nix-map --waves: one manifest carrying the closure map, rolled
 * out wave by wave, each machine fetching (only) its own closure from the
 * coordinator and committing it; and a map rollout in waves that fails halts
 * and hands its machine a rollback manifest made from the previous map.
 */
import { readlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TestFleet } from '../../testkit/harness.ts'
import { buildFakeSystem, closureOf, deleteFromStore, nixUnavailable } from '../../testkit/nix/index.ts'

const unavailable = nixUnavailable()
if (unavailable !== undefined) console.warn(`apply with NixOS closure maps skipped: ${unavailable}`)

const RUN = Math.random().toString(36).slice(2, 8)
const MACHINES = ['edge-1', 'edge-2']

interface View {
  name: string
  state: string | null
  currentGeneration: string | null
  desiredGeneration: string | null
  rolloutId: string | null
}

describe.skipIf(unavailable !== undefined)('apply deploys a nixMap channel', () => {
  let fleet: TestFleet

  /** The store path the machine's profile points at, or null before its first switch. */
  const profileTarget = async (m: string): Promise<string | null> => {
    const link = await readlink(fleet.nixProfile(m)).catch(() => null)
    return link === null ? null : readlink(join(fleet.nixProfile(m), '..', link))
  }

  beforeAll(async () => {
    fleet = await TestFleet.create()
    await fleet.startCoordinator()
    const keygen = await fleet.cli(['nix', 'keygen'])
    expect(keygen.code, keygen.stderr).toBe(0)
    for (const m of MACHINES) {
      const agent = await fleet.startNixosAgent(m, await fleet.token(m, ['nixos']))
      await agent.waitFor((e) => e.event === 'connected', 30_000, `${m} connected`)
    }
  }, 120_000)

  afterAll(async () => {
    await fleet?.stop()
  })

  it('plan lists both machines, apply commits each its own closure, then plan has nothing to do', async () => {
    const paths = await Promise.all(MACHINES.map((m) => buildFakeSystem({ tag: `apply-${m}-${RUN}` })))
    await writeFile(
      join(fleet.dir, 'closures.json'),
      JSON.stringify({ 'edge-1': paths[0], 'edge-2': paths[1] }),
    )
    const file = join(fleet.dir, 'fleet.json')
    const hosts = { nixMap: 'closures.json', generation: `nixos-${RUN}`, confirmTimeout: '30s' }
    const machines = Object.fromEntries(MACHINES.map((m) => [m, { tags: ['nixos'], channel: 'hosts' }]))
    await writeFile(file, JSON.stringify({ channels: { hosts }, machines }, null, 2))

    const before = await fleet.cli(['plan', file])
    expect(before.code, before.stderr + before.stdout).toBe(3)
    for (const m of MACHINES)
      expect(before.stdout).toMatch(new RegExp(`~ ${m}\\s+\\(none\\) → nixos-${RUN} \\(channel hosts\\)`))

    const applied = await fleet.cli(['apply', file, '--timeout', '90s', '--json'], 150_000)
    expect(applied.code, applied.stderr + applied.stdout).toBe(0)
    const summary = JSON.parse(applied.stdout.trim().split('\n').at(-1) as string)
    expect(summary.rollouts).toEqual([
      { channel: 'hosts', rolloutId: expect.any(String), machines: MACHINES },
    ])

    expect(await profileTarget('edge-1')).toBe(paths[0])
    expect(await profileTarget('edge-2')).toBe(paths[1])
    const views = (await fleet.json<View[]>(['machines'])).filter((v) => MACHINES.includes(v.name))
    expect(views.map((v) => [v.name, v.state, v.currentGeneration, v.rolloutId])).toEqual(
      MACHINES.map((m) => [m, 'committed', `nixos-${RUN}`, summary.rollouts[0].rolloutId]),
    )

    const after = await fleet.cli(['plan', file])
    expect(after.code, after.stdout).toBe(0)
    expect(after.stdout).toContain('nothing to do: the fleet matches the file')
  }, 240_000)

  it('deploy --nix-map --waves rolls one closure-map manifest out in waves; each machine commits its own', async () => {
    const paths = await Promise.all(MACHINES.map((m) => buildFakeSystem({ tag: `wave-${m}-${RUN}` })))
    // pushed, then gone from the store the agents share: each must fetch its own closure from the coordinator
    const pushed = await fleet.cli(['nix', 'push', ...paths])
    expect(pushed.code, pushed.stderr).toBe(0)
    await deleteFromStore([...new Set((await Promise.all(paths.map(closureOf))).flat())])
    const map = join(fleet.dir, 'waves.json')
    await writeFile(map, JSON.stringify({ 'edge-1': paths[0], 'edge-2': paths[1] }))

    const deployed = await fleet.cli(
      [
        'deploy',
        '--nix-map',
        map,
        '--waves',
        '1,100%',
        '--soak',
        '1s',
        '--confirm-timeout',
        '30s',
        '--timeout',
        '90s',
      ],
      150_000,
    )
    expect(deployed.code, deployed.stderr + deployed.stdout).toBe(0)
    expect(deployed.stderr).toMatch(/in waves .* for 2 machine\(s\)/)

    expect(await profileTarget('edge-1')).toBe(paths[0])
    expect(await profileTarget('edge-2')).toBe(paths[1])
    const views = (await fleet.json<View[]>(['machines'])).filter((v) => MACHINES.includes(v.name))
    expect(views.map((v) => v.state)).toEqual(['committed', 'committed'])
    // one manifest: one rollout and one generation name for both
    expect(new Set(views.map((v) => v.rolloutId)).size).toBe(1)
    expect(views[0]?.currentGeneration).toBe(views[1]?.currentGeneration)
    expect(views[0]?.currentGeneration).toMatch(/wave-edge-\d{8}T\d{6}$/)
  }, 240_000)

  it('a failing map rollout halts and rolls back to the previous map, narrowed to its machine', async () => {
    const before = (await fleet.json<View[]>(['machines'])).find((v) => v.name === 'edge-1')
    const previous = before?.currentGeneration
    expect(previous).toMatch(/^nixos-system-wave-edge-/)
    const failing = await buildFakeSystem({ tag: `broken-edge-1-${RUN}`, fail: true })
    const map = join(fleet.dir, 'broken.json')
    // edge-1 only: its rollback comes from the two-machine map manifest, narrowed to edge-1
    await writeFile(map, JSON.stringify({ 'edge-1': failing }))
    const deployed = await fleet.cli(
      [
        'deploy',
        '--nix-map',
        map,
        '--waves',
        '100%',
        '--on-failure',
        'rollback',
        '--generation',
        `broken-${RUN}`,
        '--confirm-timeout',
        '30s',
        '--timeout',
        '90s',
      ],
      150_000,
    )
    expect(deployed.code, deployed.stderr + deployed.stdout).toBe(5)
    const after = (await fleet.json<View[]>(['machines'])).find((v) => v.name === 'edge-1')
    expect(after?.desiredGeneration).toBe(previous)
  }, 240_000)
})
