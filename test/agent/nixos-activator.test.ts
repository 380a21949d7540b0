/**
 * The nixos activator against the real local Nix: fake system closures are
 * built, copied into a binary cache directory (the stand-in for the
 * coordinator's cache), deleted from the store, and then fetched, verified,
 * switched to and activated through the activator, and through the updater.
 * The profile is a temporary one, never the machine's system profile.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { type Activator, ActivatorError, type FetchProgress } from '../../agent/activator.ts'
import { nixosActivator } from '../../agent/nixos-activator.ts'
import { createUpdater, type ReportBody } from '../../agent/updater.ts'
import { type Manifest, manifestSchema } from '../../protocol/messages.ts'
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
import { type CoordinatorStandIn, coordinatorStandIn, copyToCache, serveCacheDir } from './nix-fixtures.ts'

const skip = nixUnavailable()
if (skip !== undefined) console.warn(`skipping the nixos activator tests with real Nix: ${skip}`)

const fleet = makeFleet()
const never = new AbortController().signal
/** Store paths are named by tag: a fresh suffix per run keeps runs from sharing paths. */
const run = randomBytes(4).toString('hex')

describe.skipIf(skip !== undefined)('nixos activator with real Nix', () => {
  let dir: string
  let trusted: { secretFile: string; publicKey: string }
  let other: { secretFile: string; publicKey: string }
  const mounts: string[] = []

  beforeAll(async () => {
    dir = await tempDir('fm-nixos-')
    trusted = await nixCacheKey(dir, `fleet-trusted-${run}`)
    other = await nixCacheKey(dir, `fleet-other-${run}`)
  })
  afterAll(async () => {
    for (const m of mounts) execFileSync('umount', [m])
    await removeDir(dir)
  })

  // Per test: a cache directory, the agent's nix root, a profile and the switch log.
  let t: string
  let cacheDir: string
  let root: string
  let profile: string
  let switchLog: string
  let standIn: CoordinatorStandIn
  let activator: Activator
  let sequence: number
  beforeEach(async (ctx) => {
    t = join(dir, `${ctx.task.id}`)
    cacheDir = join(t, 'cache')
    root = join(t, 'agent', 'nix')
    profile = join(t, 'profiles', 'system')
    switchLog = join(t, 'switch.log')
    await mkdir(cacheDir, { recursive: true })
    standIn = coordinatorStandIn(cacheDir)
    activator = makeActivator()
    sequence = 0
  })

  function makeActivator(env: NodeJS.ProcessEnv = {}, cache = standIn): Activator {
    return nixosActivator({
      root,
      cache,
      profile,
      env: nixEnv({ FLEETMESH_FAKE_SWITCH_LOG: switchLog, ...env }),
    })
  }

  const tag = (name: string) => `${name}-${run}`

  /**
   * Builds a fake system, publishes its closure in the stand-in's cache (signed by
   * the trusted key unless said otherwise) and deletes it from the store.
   */
  async function published(
    name: string,
    options: { sign?: 'trusted' | 'other' | 'none'; deps?: number; kb?: number; fail?: boolean } = {},
  ): Promise<string> {
    const { sign = 'trusted', ...spec } = options
    const path = await buildFakeSystem({ tag: tag(name), ...spec })
    const key = sign === 'trusted' ? trusted.secretFile : sign === 'other' ? other.secretFile : undefined
    await copyToCache(cacheDir, path, key)
    await deleteFromStore(await closureOf(path))
    return path
  }

  function manifest(path: string, activation: Manifest['activation'] = 'switch', name = 'sys'): Manifest {
    sequence += 1
    return fleet.manifest({
      sequence,
      generation: `${name}-${sequence}`,
      payload: { kind: 'nix', storePath: path, substituters: [], trustedPublicKeys: [trusted.publicKey] },
      activation,
      healthCheck: null,
    })
  }

  async function install(m: Manifest, logs: string[] = []) {
    const fetched = await activator.fetch(
      m,
      () => {},
      never,
      (line) => logs.push(line),
    )
    const gen = await activator.prepare(m, fetched)
    await activator.switchTo(gen)
    const result = await activator.activate(gen, null)
    return { gen, result, logs }
  }

  const switchCalls = async () =>
    (await readFile(switchLog, 'utf8').catch(() => '')).split('\n').filter(Boolean)
  const profileTarget = async () => {
    const link = await readlink(profile).catch(() => null)
    return link === null ? null : readlink(join(profile, '..', link))
  }
  const generationLinks = async () =>
    (await readdir(join(t, 'profiles')).catch(() => [] as string[]))
      .filter((n) => /^system-\d+-link$/.test(n))
      .sort()

  it('fetches a closure from the coordinator, points the profile at it and runs switch-to-configuration switch', async () => {
    const path = await published('switch', { deps: 2 })
    const m = manifest(path)
    const logs: string[] = []
    const progress: FetchProgress[] = []
    expect(
      await activator.fetch(
        m,
        (p) => progress.push(p),
        never,
        (l) => logs.push(l),
      ),
    ).toBe(path)
    expect(await isValid(path)).toBe(true)
    expect(logs.join('\n')).toMatch(/fetched 3 of 3 paths of .*, \d+\.\d KiB from the coordinator/)
    const last = progress.at(-1)
    expect(last?.total).toBeGreaterThan(0)
    expect(last?.done).toBe(last?.total)
    expect(await readdir(join(root, 'nars'))).toEqual([])

    const gen = await activator.prepare(m, path)
    expect(gen).toEqual({
      id: basename(path),
      name: m.generation,
      path,
      manifestId: m.id,
      activation: 'switch',
    })
    await activator.switchTo(gen)
    expect(await profileTarget()).toBe(path)
    const result = await activator.activate(gen, null)
    expect(result.rebootRequired).toBeUndefined()
    expect(result.log).toContain(`switching to ${tag('switch')} (switch)`)
    expect(await switchCalls()).toEqual([`${path} switch`])
    // The profile names the generation as the manifest did, also for a new activator (a restart).
    expect(await makeActivator().current()).toEqual({
      id: basename(path),
      name: m.generation,
      path,
      manifestId: m.id,
    })
    // Switching again after a crash adds no generation.
    await activator.switchTo(gen)
    expect(await generationLinks()).toEqual(['system-1-link'])
  })

  it('test mode activates without touching the profile', async () => {
    const base = await buildFakeSystem({ tag: tag('test-base') })
    await install(manifest(base))
    const path = await published('test')
    const { gen, result } = await install(manifest(path, 'test'))
    expect(gen.activation).toBe('test')
    expect(result.rebootRequired).toBeUndefined()
    expect(await profileTarget()).toBe(base)
    expect(await generationLinks()).toEqual(['system-1-link'])
    expect(await switchCalls()).toEqual([`${base} switch`, `${path} test`])
  })

  it('boot mode points the profile at the generation and says a reboot is needed', async () => {
    const path = await published('boot')
    const { result } = await install(manifest(path, 'boot'))
    expect(result.rebootRequired).toBe(true)
    expect(await profileTarget()).toBe(path)
    expect(await switchCalls()).toEqual([`${path} boot`])
  })

  it('fetches only the paths of the closure that are missing here', async () => {
    const path = await buildFakeSystem({ tag: tag('partial'), deps: 3 })
    await copyToCache(cacheDir, path, trusted.secretFile)
    const closure = await closureOf(path)
    const deps = closure.filter((p) => p !== path)
    expect(deps).toHaveLength(3)
    // The top and one dependency go; the other two stay valid here.
    await deleteFromStore([path, deps[0] as string])
    const logs: string[] = []
    await activator.fetch(
      manifest(path),
      () => {},
      never,
      (l) => logs.push(l),
    )
    expect(standIn.narsFetched.sort()).toEqual([path, deps[0]].sort())
    expect(logs.join('\n')).toContain('fetched 2 of 4 paths')
    for (const p of closure) expect(await isValid(p)).toBe(true)
  })

  it("leaves what the coordinator lacks, or holds unsigned, to the manifest's substituters", async () => {
    const path = await buildFakeSystem({ tag: tag('external'), deps: 2 })
    const [lacking, unsigned] = (await closureOf(path)).filter((p) => p !== path) as [string, string]
    // The manifest's own cache has everything, signed; the coordinator lacks one
    // dependency and holds the other unsigned.
    const upstream = join(t, 'upstream')
    await copyToCache(upstream, path, trusted.secretFile)
    await copyToCache(cacheDir, path, trusted.secretFile)
    const narinfo = (p: string) => `${basename(p).slice(0, 32)}.narinfo`
    await rm(join(cacheDir, narinfo(lacking)))
    const unsignedText = await readFile(join(cacheDir, narinfo(unsigned)), 'utf8')
    await writeFile(join(cacheDir, narinfo(unsigned)), unsignedText.replace(/^Sig: .*\n/gm, ''))
    await deleteFromStore(await closureOf(path))
    const http = await serveCacheDir(upstream)
    try {
      const m = manifest(path)
      const payload = { ...m.payload, substituters: [http.url] } as Manifest['payload']
      const logs: string[] = []
      await activator.fetch(
        { ...m, payload },
        () => {},
        never,
        (l) => logs.push(l),
      )
      expect(standIn.narsFetched).toEqual([path])
      expect(logs.join('\n')).toContain(`2 paths were left to ${http.url}`)
      for (const p of await closureOf(path)) expect(await isValid(p)).toBe(true)
    } finally {
      await http.close()
    }
  })

  describe('refusals, through the updater: nothing is switched', () => {
    async function offer(m: Manifest) {
      const reports: ReportBody[] = []
      const updater = await createUpdater({
        stateDir: join(t, 'state'),
        trust: fleet.trust,
        activator,
        confirm: async () => {},
        report: async (r) => {
          reports.push(r)
        },
        progressIntervalMs: 0,
      })
      try {
        return { outcome: await updater.offer(fleet.sign(m)), reports }
      } finally {
        await updater.close()
      }
    }

    async function expectRefused(path: string, code: string, message: RegExp) {
      const before = await profileTarget()
      const { outcome } = await offer(manifest(path))
      expect(outcome.outcome).toBe('failed')
      expect(outcome.error?.code).toBe(code)
      expect(outcome.error?.message).toMatch(message)
      expect(await profileTarget()).toBe(before)
      expect(await switchCalls()).toEqual([])
      expect(await isValid(path)).toBe(false)
    }

    it('an unsigned path', async () => {
      const path = await published('unsigned', { sign: 'none' })
      await expectRefused(path, 'untrusted-path', new RegExp(`${path} is not signed`))
    })

    it('a path signed by a key the manifest does not trust', async () => {
      const path = await published('untrusted', { sign: 'other' })
      await expectRefused(path, 'untrusted-path', new RegExp(`signed only by \\[fleet-other-${run}\\]`))
    })

    it('a NAR whose bytes do not match its signed hash', async () => {
      const path = await published('tampered')
      const nar = await standIn.narFile(path)
      const handle = await open(nar, 'r+')
      const byte = Buffer.alloc(1)
      await handle.read(byte, 0, 1, 200)
      byte[0] = (byte[0] as number) ^ 0xff
      await handle.write(byte, 0, 1, 200)
      await handle.close()
      await expectRefused(path, 'artifact-mismatch', new RegExp(`the NAR of ${path} does not match its hash`))
    })

    it('a failing switch-to-configuration rolls back to the previous generation and switches it again', async () => {
      const good = await published('good')
      const first = await offer(manifest(good))
      expect(first.outcome.outcome).toBe('committed')
      expect(first.reports.at(-1)?.log).toContain(`switching to ${tag('good')} (switch)`)

      const bad = await published('bad', { fail: true })
      const { outcome, reports } = await offer(manifest(bad))
      expect(outcome.outcome).toBe('rolled-back')
      expect(outcome.error?.code).toBe('activation-failed')
      expect(outcome.error?.message).toContain('failed on purpose')
      expect(await profileTarget()).toBe(good)
      expect(await switchCalls()).toEqual([`${good} switch`, `${bad} switch`, `${good} switch`])
      const last = reports.at(-1)
      expect(last?.state).toBe('rolled-back')
      expect(last?.log).toMatch(/fetched 2 of 2 paths/)
      expect(last?.log).toContain('failed on purpose')
      expect(last?.log).toContain(`switching to ${tag('good')} (switch)`)
      // The failed generation left newer than the current one is gone.
      expect(await generationLinks()).toEqual(['system-1-link'])
    })

    it('boot mode reports that a reboot is needed', async () => {
      const path = await published('boot-updater')
      const { outcome, reports } = await offer(manifest(path, 'boot'))
      expect(outcome.outcome).toBe('committed')
      expect(reports.at(-1)).toMatchObject({ state: 'committed', rebootRequired: true })
    })
  })

  it('the activator refuses to activate with a clear error', async () => {
    const path = await published('failing', { fail: true })
    const m = manifest(path)
    const gen = await activator.prepare(m, await activator.fetch(m, () => {}, never))
    await activator.switchTo(gen)
    const err = await activator.activate(gen, null).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActivatorError)
    expect((err as ActivatorError).code).toBe('activation-failed')
    expect((err as ActivatorError).message).toContain('failed on purpose')
    expect((err as ActivatorError).log).toContain(`switching to ${tag('failing')} (switch)`)
  })

  it('says plainly when there is no Nix', async () => {
    const empty = join(t, 'empty-bin')
    await mkdir(empty, { recursive: true })
    const noNix = makeActivator({ PATH: empty })
    const err = await noNix.fetch(manifest(`/nix/store/${'a'.repeat(32)}-x`), () => {}, never).catch((e) => e)
    expect((err as ActivatorError).code).toBe('nix-unavailable')
    expect((err as Error).message).toContain('this device has no Nix; install it or use --activator profile')
  })

  it('a malformed store path never gets past the manifest schema', () => {
    const m = manifest(`/nix/store/${'a'.repeat(32)}-x`)
    const bad = { ...m, payload: { ...m.payload, storePath: '/nix/store/not-a-store-path' } }
    expect(manifestSchema.safeParse(bad).success).toBe(false)
  })

  it('refuses archive payloads', async () => {
    const err = await activator.fetch(fleet.manifest(), () => {}, never).catch((e) => e)
    expect((err as ActivatorError).code).toBe('unsupported-payload')
  })

  describe('a full disk', () => {
    async function smallDisk(ctx: { skip: (note?: string) => void }): Promise<string> {
      const nars = join(root, 'nars')
      await mkdir(nars, { recursive: true })
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', nars], { stdio: 'pipe' })
      } catch (err) {
        console.warn(`skipping a full-disk test: cannot mount a tmpfs (${(err as Error).message})`)
        ctx.skip()
      }
      mounts.push(nars)
      return nars
    }

    it('refuses a closure whose NARs do not fit, before downloading', async (ctx) => {
      await smallDisk(ctx)
      const path = await published('big', { deps: 2, kb: 1024 })
      const err = await activator.fetch(manifest(path), () => {}, never).catch((e) => e)
      expect((err as ActivatorError).code).toBe('no-space')
      expect((err as Error).message).toMatch(/needs \d+\.\d MiB in .*nars, \d+\.\d MiB free/)
      expect(standIn.narsFetched).toEqual([])
      expect(await profileTarget()).toBe(null)
    })

    it('maps running out of space during the download to the same error', async (ctx) => {
      const nars = await smallDisk(ctx)
      const path = await published('fills-up', { deps: 1, kb: 600 })
      // Something else fills the disk once the download has started.
      const filling: CoordinatorStandIn = {
        ...standIn,
        async fetchNar(...args) {
          await writeFile(join(nars, 'filler'), Buffer.alloc(1024 * 1024)).catch(() => {})
          return standIn.fetchNar(...args)
        },
      }
      const err = await makeActivator({}, filling)
        .fetch(manifest(path), () => {}, never)
        .catch((e) => e)
      expect((err as ActivatorError).code).toBe('no-space')
      expect((err as Error).message).toMatch(/no space left to download the NAR of/)
      expect(await isValid(path)).toBe(false)
    })
  })

  it('gc keeps the newest generations and deletes a failed one left after a rollback', async () => {
    const paths = []
    for (const n of [1, 2, 3, 4]) paths.push(await buildFakeSystem({ tag: tag(`gc${n}`) }))
    const gens = []
    for (const p of paths) gens.push((await install(manifest(p))).gen)
    expect(await generationLinks()).toEqual([
      'system-1-link',
      'system-2-link',
      'system-3-link',
      'system-4-link',
    ])
    // Rolling back to the third leaves the fourth newer than the current one.
    await activator.switchTo(gens[2] ?? null)
    expect(await profileTarget()).toBe(paths[2])
    expect(await generationLinks()).toHaveLength(4)
    const removed = await activator.gc(2, [])
    expect(removed.sort()).toEqual([paths[0], paths[3]].map((p) => basename(p as string)).sort())
    expect(await generationLinks()).toEqual(['system-2-link', 'system-3-link'])
    expect((await activator.list()).map((g) => g.path)).toEqual([paths[1], paths[2]])
    expect((await activator.current())?.path).toBe(paths[2])
    expect((await activator.previousOf(gens[2] as (typeof gens)[number]))?.path).toBe(paths[1])
    // A protected generation stays whatever its age.
    expect(await activator.gc(1, [gens[1] as (typeof gens)[number]])).toEqual([])
  })
})
