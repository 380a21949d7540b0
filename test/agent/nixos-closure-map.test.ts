/**
 * The nixos activator with a closure map (`storePaths`, one closure per
 * machine) against the real local Nix: it installs its own machine's closure
 * and nothing of the others', and refuses a map without one for it.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { type Activator, ActivatorError } from '../../agent/activator.ts'
import { nixosActivator } from '../../agent/nixos-activator.ts'
import type { Manifest } from '../../protocol/messages.ts'
import {
  buildFakeSystem,
  closureOf,
  deleteFromStore,
  isValid,
  nixCacheKey,
  nixEnv,
  nixUnavailable,
} from '../../testkit/nix/index.ts'
import { makeFleet, removeDir, tempDir } from './fixtures.ts'
import { coordinatorStandIn, copyToCache } from './nix-fixtures.ts'

const skip = nixUnavailable()
if (skip !== undefined) console.warn(`skipping the nixos closure map tests with real Nix: ${skip}`)

const fleet = makeFleet({ machine: 'edge-1' })
const never = new AbortController().signal
const run = randomBytes(4).toString('hex')

describe.skipIf(skip !== undefined)('nixos activator with a closure map', () => {
  let dir: string
  let trusted: { secretFile: string; publicKey: string }
  beforeAll(async () => {
    dir = await tempDir('fm-nixos-map-')
    trusted = await nixCacheKey(dir, `fleet-map-${run}`)
  })
  afterAll(() => removeDir(dir))

  let t: string
  let cacheDir: string
  let profile: string
  let switchLog: string
  const activatorFor = (machine: string | undefined): Activator =>
    nixosActivator({
      root: join(t, 'agent', 'nix'),
      cache: coordinatorStandIn(cacheDir),
      profile,
      ...(machine === undefined ? {} : { machine }),
      env: nixEnv({ FLEETMESH_FAKE_SWITCH_LOG: switchLog }),
    })
  beforeEach(async (ctx) => {
    t = join(dir, ctx.task.id)
    cacheDir = join(t, 'cache')
    profile = join(t, 'profiles', 'system')
    switchLog = join(t, 'switch.log')
    await mkdir(cacheDir, { recursive: true })
  })

  /** A fake system in the stand-in's cache, signed by the trusted key, gone from the store. */
  async function published(name: string): Promise<string> {
    const path = await buildFakeSystem({ tag: `${name}-${run}` })
    await copyToCache(cacheDir, path, trusted.secretFile)
    await deleteFromStore(await closureOf(path))
    return path
  }

  const mapManifest = (storePaths: Record<string, string>): Manifest =>
    fleet.manifest({
      sequence: 1,
      generation: 'fleet-1',
      targets: { machines: Object.keys(storePaths), tags: [] },
      payload: { kind: 'nix', storePaths, substituters: [], trustedPublicKeys: [trusted.publicKey] },
      activation: 'switch',
      healthCheck: null,
    })

  it("fetches, switches to and activates this machine's own closure, nothing of the others'", async () => {
    const own = await published('map-own')
    const theirs = await published('map-theirs')
    const m = mapManifest({ 'edge-1': own, 'edge-2': theirs })
    const activator = activatorFor('edge-1')
    const fetched = await activator.fetch(m, () => {}, never)
    expect(fetched).toBe(own)
    const gen = await activator.prepare(m, fetched)
    expect(gen).toMatchObject({ path: own, name: 'fleet-1' })
    await activator.switchTo(gen)
    await activator.activate(gen, null)
    expect(await readlink(join(profile, '..', await readlink(profile)))).toBe(own)
    expect(await readFile(switchLog, 'utf8')).toContain(`map-own-${run}`)
    expect(await isValid(theirs)).toBe(false)
  })

  it('refuses a map without a closure for this machine, before fetching anything', async () => {
    const theirs = await published('map-only-theirs')
    const m = mapManifest({ 'edge-2': theirs })
    for (const activator of [activatorFor('edge-1'), activatorFor(undefined)]) {
      const err = await activator.fetch(m, () => {}, never).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ActivatorError)
      expect((err as ActivatorError).code).toBe('not-in-closure-map')
      expect((err as ActivatorError).message).toMatch(/one closure per machine, for \[edge-2\]/)
    }
    expect(await isValid(theirs)).toBe(false)
  })
})
