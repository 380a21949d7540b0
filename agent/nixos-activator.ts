/**
 * The `nixos` activator installs NixOS system closures built elsewhere: no
 * evaluation and no builds on the device. For a manifest whose payload is
 * `{ kind: 'nix', storePath, substituters, trustedPublicKeys }` (or, instead of
 * `storePath`, `storePaths`: a closure per machine, of which it takes its own) it
 *
 *   fetch     asks the coordinator for the closure's narinfos, checks every
 *             signature itself against the manifest's keys (also where Nix
 *             would take a path unsigned), checks the disk has room, and lets
 *             the local Nix substitute the missing paths through a loopback
 *             cache (nix-substituter.ts) fed by the coordinator (nixos-fetch.ts)
 *   prepare   names the generation (no work: the store path is the generation)
 *   switchTo  points the system profile at it (`switch`, `boot`), or leaves the
 *             profile alone (`test`)
 *   activate  runs `<path>/bin/switch-to-configuration <mode>`
 *
 *   <root>/nars/              NARs while they are downloaded (removed after the realisation)
 *   <root>/gcroots/pending    keeps a fetched closure alive until the profile refers to it
 *   <root>/generations.json   generation names (nix-generation-names.ts)
 *   <root>/xdg-cache/         Nix's narinfo cache, emptied before every realisation
 *
 * Crash safety: Nix replaces profile links by rename, fetch resumes partial
 * NARs, and switchTo does nothing when the profile already points at the
 * generation, so every step can run again after a kill -9 anywhere.
 *
 * @example
 *
 * ```ts
 * const activator = nixosActivator({ root: '/var/lib/fleetmesh/nix', cache: meshNixCache(host, coordinator) })
 * const path = await activator.fetch(manifest, (p) => report(p), signal, (line) => log(line))
 * const gen = await activator.prepare(manifest, path)
 * await activator.switchTo(gen)
 * const { log, rebootRequired } = await activator.activate(gen, previous)
 * ```
 */
import { readdir, readlink, rm, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { commandEnv, describeResult, runProcess } from '../lib/index.ts'
import { type Manifest, nixStorePathFor, STORE_DIR } from '../protocol/index.ts'
import {
  type ActivationMode,
  type ActivationResult,
  type Activator,
  ActivatorError,
  type FetchProgress,
  type GenerationInfo,
  type LiveOutput,
} from './activator.ts'
import type { NixCacheSource } from './nix-cache-client.ts'
import { GenerationNames } from './nix-generation-names.ts'
import { NixStore, type ProfileGeneration } from './nix-store.ts'
import { activatorError, MAX_QUOTED_OUTPUT, nixStep, tail } from './nixos-errors.ts'
import { fetchClosure, invalidPaths, type NixosFetchInit, type OwnNixPayload } from './nixos-fetch.ts'

export const DEFAULT_SYSTEM_PROFILE = '/nix/var/nix/profiles/system'
/** switch-to-configuration output kept for the update log. */
const MAX_ACTIVATION_LOG = 12 * 1024

export interface NixosActivatorInit {
  /** Holds nars/, gcroots/, generations.json, xdg-cache/. */
  root: string
  /** The coordinator's cache, or a stand-in. */
  cache: NixCacheSource
  /** This machine's name: which closure of a closure map is its own. Without it a map is refused. */
  machine?: string
  /** The profile generations are added to. Default /nix/var/nix/profiles/system. */
  profile?: string
  /** Environment for Nix and switch-to-configuration. Default: {@link nixosEnv}(). */
  env?: NodeJS.ProcessEnv
  /** How long switch-to-configuration may run. Default 30 minutes. */
  activateTimeoutMs?: number
  /** How long substituting a closure may take. Default 6 hours. */
  realiseTimeoutMs?: number
}

export function nixosActivator(init: NixosActivatorInit): Activator {
  return new NixosActivator(init)
}

/**
 * The environment Nix and switch-to-configuration run with: the agent's PATH,
 * HOME and LANG, its NIX_* settings (NIX_REMOTE, NIX_CONFIG, …), then `vars`.
 */
export function nixosEnv(vars: Record<string, string> = {}): NodeJS.ProcessEnv {
  const nix: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('NIX_') && value !== undefined) nix[name] = value
  }
  return commandEnv({ ...nix, ...vars })
}

class NixosActivator implements Activator {
  readonly kind = 'nixos'
  readonly #root: string
  readonly #profile: string
  readonly #env: NodeJS.ProcessEnv
  readonly #nix: NixStore
  readonly #names: GenerationNames
  readonly #activateTimeoutMs: number
  readonly #fetching: NixosFetchInit
  readonly #machine: string | undefined

  constructor(init: NixosActivatorInit) {
    this.#root = init.root
    this.#machine = init.machine
    this.#profile = init.profile ?? DEFAULT_SYSTEM_PROFILE
    this.#env = init.env ?? nixosEnv()
    this.#nix = new NixStore({ env: this.#env })
    this.#names = new GenerationNames(init.root)
    this.#activateTimeoutMs = init.activateTimeoutMs ?? 30 * 60_000
    this.#fetching = {
      cache: init.cache,
      nix: this.#nix,
      narDir: this.#narDir,
      pendingRoot: this.#pendingRoot,
      cacheHome: this.#cacheHome,
      realiseTimeoutMs: init.realiseTimeoutMs ?? 6 * 3_600_000,
    }
  }

  get #narDir(): string {
    return join(this.#root, 'nars')
  }

  get #pendingRoot(): string {
    return join(this.#root, 'gcroots', 'pending')
  }

  get #cacheHome(): string {
    return join(this.#root, 'xdg-cache')
  }

  async fetch(
    manifest: Manifest,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
    log: (line: string) => void = () => {},
  ): Promise<string> {
    const payload = ownPayload(manifest, this.#machine)
    await fetchClosure(this.#fetching, payload, onProgress, signal, log)
    return payload.storePath
  }

  async prepare(manifest: Manifest, _artifactPath: string): Promise<GenerationInfo> {
    const path = ownPayload(manifest, this.#machine).storePath
    if ((await this.#invalid([path])).length > 0) {
      throw new ActivatorError(
        'prepare-failed',
        `${path} is no longer in the local store (garbage-collected since it was fetched?); deploy it again`,
      )
    }
    await this.#names.remember(path, manifest.generation, manifest.id)
    return { ...(await this.#names.info(path)), activation: manifest.activation }
  }

  async switchTo(gen: GenerationInfo | null): Promise<void> {
    try {
      if (gen === null) {
        // Only a profile that did not exist before the update is "no generation".
        await unlink(this.#profile).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err
        })
        return
      }
      if (gen.activation === 'test') return
      const generations = await this.#nix.generations(this.#profile)
      const current = generations.find((g) => g.current)
      if (current?.path === gen.path) return
      // A rollback goes back to the generation that is already there rather than adding one.
      const earlier =
        current === undefined
          ? undefined
          : generations.filter((g) => g.path === gen.path && g.number < current.number).at(-1)
      if (earlier !== undefined) await this.#nix.switchGeneration(this.#profile, earlier.number)
      else await this.#nix.setProfile(this.#profile, gen.path)
    } catch (err) {
      throw activatorError(err, 'switch-failed', `pointing ${this.#profile} at ${gen?.path ?? 'nothing'}`)
    }
  }

  async activate(
    gen: GenerationInfo,
    previous: GenerationInfo | null,
    live?: LiveOutput,
  ): Promise<ActivationResult> {
    // Going forward the new generation says how; rolling back, the one being left does.
    const mode = activationMode(gen.activation ?? previous?.activation)
    const argv = [join(gen.path, 'bin', 'switch-to-configuration'), mode]
    live?.line(`$ ${argv.join(' ')}`)
    const result = await runProcess(argv, {
      cwd: '/',
      env: this.#env,
      timeoutMs: this.#activateTimeoutMs,
      maxOutputBytes: MAX_ACTIVATION_LOG,
      ...(live !== undefined ? { onOutput: live.write } : {}),
    })
    const output = result.output.trimEnd()
    const log = output === '' ? `$ ${argv.join(' ')}` : `$ ${argv.join(' ')}\n${output}`
    if (result.code !== 0) {
      throw new ActivatorError(
        'activation-failed',
        `activating generation "${gen.name}": ${describeResult(argv, { ...result, output: tail(output, MAX_QUOTED_OUTPUT) })}`,
        { log },
      )
    }
    return mode === 'boot' && gen.activation === 'boot' ? { log, rebootRequired: true } : { log }
  }

  async current(): Promise<GenerationInfo | null> {
    const current = (await this.#generations()).find((g) => g.current)
    return current === undefined ? null : this.#names.info(current.path)
  }

  async list(): Promise<GenerationInfo[]> {
    return this.#names.infos(distinctPaths(await this.#generations()))
  }

  async previousOf(gen: GenerationInfo): Promise<GenerationInfo | null> {
    const generations = await this.#generations()
    const own = generations.filter((g) => g.path === gen.path).at(-1)?.number ?? Number.POSITIVE_INFINITY
    const before = generations.filter((g) => g.number < own && g.path !== gen.path).at(-1)
    return before === undefined ? null : this.#names.info(before.path)
  }

  async gc(keep: number, protect: readonly GenerationInfo[]): Promise<string[]> {
    const generations = await this.#generations()
    const current = generations.find((g) => g.current)
    const protectedPaths = new Set(protect.map((g) => g.path))
    const doomed: ProfileGeneration[] = []
    let kept = 0
    for (const g of [...generations].reverse()) {
      if (g.current) {
        kept += 1
        continue
      }
      // Newer than the current one means left behind by a rollback: a failed generation. With
      // no current one at all, a rollback to "no generation" left them all behind.
      const failed = current === undefined || g.number > current.number
      if (!failed && kept < keep) kept += 1
      else if (!protectedPaths.has(g.path)) doomed.push(g)
    }
    await nixStep('switch-failed', () =>
      this.#nix.deleteGenerations(
        this.#profile,
        doomed.map((g) => g.number),
      ),
    )
    const remaining = generations.filter((g) => !doomed.includes(g))
    const live = new Set([...remaining.map((g) => g.path), ...protectedPaths])
    await this.#names.retain(live)
    // Leftovers of interrupted fetches; the directory itself may be a mount point.
    await emptyDir(this.#narDir)
    await rm(this.#cacheHome, { recursive: true, force: true })
    // The pending root has done its job once a kept generation refers to the path.
    const pending = await readLinkTarget(this.#pendingRoot)
    if (pending !== undefined && !protectedPaths.has(pending)) await unlink(this.#pendingRoot).catch(() => {})
    const gone = doomed.filter((g) => !live.has(g.path)).map((g) => g.path)
    return [...new Set(gone)].map((p) => p.slice(STORE_DIR.length + 1))
  }

  async #generations(): Promise<ProfileGeneration[]> {
    return nixStep('switch-failed', () => this.#nix.generations(this.#profile))
  }

  #invalid(paths: readonly string[]): Promise<string[]> {
    return invalidPaths(this.#nix, paths)
  }
}

/** The manifest's nix payload with this machine's closure picked out of it. */
function ownPayload(manifest: Manifest, machine: string | undefined): OwnNixPayload {
  const { payload } = manifest
  if (payload.kind !== 'nix') {
    throw new ActivatorError(
      'unsupported-payload',
      `the nixos activator installs nix payloads; manifest ${manifest.id} carries a ${payload.kind} payload`,
    )
  }
  const storePath = machine === undefined ? payload.storePath : nixStorePathFor(payload, machine)
  if (storePath === undefined) {
    const mapped = Object.keys(payload.storePaths ?? {}).slice(0, 20)
    throw new ActivatorError(
      'not-in-closure-map',
      `manifest ${manifest.id} carries one closure per machine, for [${mapped.join(', ')}${mapped.length === 20 ? ', …' : ''}], ` +
        `but none for this machine ("${machine ?? 'unnamed: the agent did not pass its name'}"); nothing was fetched. ` +
        'Deploy a map that names this machine',
    )
  }
  return {
    kind: 'nix',
    storePath,
    substituters: payload.substituters,
    trustedPublicKeys: payload.trustedPublicKeys,
  }
}

function activationMode(mode: ActivationMode | undefined): 'switch' | 'boot' | 'test' {
  return mode === 'boot' || mode === 'test' ? mode : 'switch'
}

function distinctPaths(generations: readonly ProfileGeneration[]): string[] {
  // Ordered by the newest generation pointing at each path.
  const last = new Map<string, number>()
  for (const g of generations) last.set(g.path, g.number)
  return [...last.entries()].sort((a, b) => a[1] - b[1]).map(([path]) => path)
}

async function emptyDir(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[])
  for (const name of names) await rm(join(dir, name), { recursive: true, force: true })
}

function readLinkTarget(link: string): Promise<string | undefined> {
  return readlink(link).catch(() => undefined)
}
