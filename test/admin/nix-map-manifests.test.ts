/**
 * The manifests of a closure map (admin/commands/deploy-nix.ts
 * nixMapManifests), for deploy --nix-map and apply's nixMap channels: one per
 * machine without waves (every agent understands them), one carrying the whole
 * map in waves, with one generation name for every machine.
 */
import { describe, expect, it } from 'vitest'
import { type NixRelease, nixMapManifests } from '../../admin/commands/deploy-nix.ts'
import { DEPLOY_COMMAND } from '../../admin/commands/deploy-options.ts'
import { wavePolicy } from '../../admin/commands/deploy-wave-options.ts'
import { NixSigningKey } from '../../keys/index.ts'
import { parseCommand, UsageError } from '../../lib/index.ts'
import { buildManifest, MAX_CLOSURE_MAP_MACHINES, manifestSchema } from '../../protocol/index.ts'

const PATH_1 = '/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-edge-1-24.05'
const PATH_2 = '/nix/store/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-edge-2-24.05'
const key = NixSigningKey.generate('fleet-cache-1')
const release: NixRelease = {
  activation: 'switch',
  substituters: [],
  trusted: [key.publicKey],
  signingKey: key,
}
const byMachine = new Map([
  ['edge-2', PATH_2],
  ['edge-1', PATH_1],
])

describe('nixMapManifests', () => {
  it('without waves: one manifest per machine, each with its own store path', () => {
    const fields = nixMapManifests(byMachine, release, { generation: undefined }, false)
    expect(fields.map((f) => [f.targets, f.payload])).toEqual([
      [{ machines: ['edge-2'], tags: [] }, expect.objectContaining({ storePath: PATH_2 })],
      [{ machines: ['edge-1'], tags: [] }, expect.objectContaining({ storePath: PATH_1 })],
    ])
  })

  it('in waves: one manifest with the map, targeting exactly its machines, under one generation', () => {
    const [fields, ...rest] = nixMapManifests(byMachine, release, { generation: undefined }, true)
    expect(rest).toEqual([])
    expect(fields?.targets).toEqual({ machines: ['edge-1', 'edge-2'], tags: [] })
    expect(fields?.payload).toEqual({
      kind: 'nix',
      storePaths: { 'edge-1': PATH_1, 'edge-2': PATH_2 },
      substituters: [],
      trustedPublicKeys: [key.publicKey.toString()],
    })
    // derived once, from what the closures' names share
    expect(fields?.generation).toMatch(/^nixos-system-edge-\d{8}T\d{6}$/)
    const given = nixMapManifests(byMachine, release, { generation: 'fleet-7' }, true)
    expect(given.map((f) => f.generation)).toEqual(['fleet-7'])
    if (fields === undefined) throw new Error('no manifest')
    const manifest = buildManifest({ ...fields, fleetId: 'acme', sequence: 1 })
    expect(manifestSchema.safeParse(manifest).success).toBe(true)
  })

  it(`in waves refuses a map over ${MAX_CLOSURE_MAP_MACHINES} machines or the envelope, saying how to go on`, () => {
    const big = new Map(Array.from({ length: MAX_CLOSURE_MAP_MACHINES + 1 }, (_, i) => [`m${i}`, PATH_1]))
    expect(() => nixMapManifests(big, release, { generation: 'g' }, true)).toThrow(UsageError)
    expect(() => nixMapManifests(big, release, { generation: 'g' }, true)).toThrow(/deploy without --waves/)
    // fewer machines, but more than a manifest envelope holds
    const long = new Map(Array.from({ length: 3000 }, (_, i) => [`machine-${i}`, PATH_1]))
    expect(() => nixMapManifests(long, release, { generation: 'g' }, true)).toThrow(/about \d+ KiB\)/)
    expect(nixMapManifests(long, release, { generation: 'g' }, false)).toHaveLength(3000)
  })
})

describe('deploy --nix-map --waves', () => {
  it('is a wave policy, no longer refused', () => {
    const p = parseCommand(['--nix-map', 'm.json', '--waves', '1,100%', '--soak', '1s'], DEPLOY_COMMAND)
    expect(wavePolicy(p)?.waves).toEqual([{ count: 1 }, { percent: 100 }])
  })
})
