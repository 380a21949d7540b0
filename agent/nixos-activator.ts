/**
 * The `nixos` activator installs NixOS system closures built elsewhere: no
 * evaluation and no builds on the device. For a manifest whose payload is
 * `{ kind: 'nix', storePath, substituters, trustedPublicKeys }` it
 *
 *   fetch     asks the coordinator for the closure's narinfos, checks every
 *             signature itself against the manifest's keys (also where Nix
 *             would take a path unsigned), checks the disk has room, and lets
 *             the local Nix substitute the missing paths through a loopback
 *             cache (nix-substituter.ts) fed by the coordinator
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
import { readdir, readlink, rm, stat, statfs, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { NixPublicKey } from '../keys/index.ts'
import { commandEnv, describeResult, ensureDir, errorMessage, fileSize, runProcess } from '../lib/index.ts'
import {
  checkNarInfoSignature,
  type Manifest,
  type NarInfo,
  STORE_DIR,
  sha256HexOfNixHash,
} from '../protocol/index.ts'
import {
  type ActivationMode,
  type ActivationResult,
  type Activator,
  ActivatorError,
  type ActivatorErrorCode,
  type FetchProgress,
  type GenerationInfo,
} from './activator.ts'
import { NixCacheError, type NixCacheSource } from './nix-cache-client.ts'
import { GenerationNames } from './nix-generation-names.ts'
import { NixStore, NixStoreError, type ProfileGeneration } from './nix-store.ts'
import { NixSubstituter } from './nix-substituter.ts'

export const DEFAULT_SYSTEM_PROFILE = '/nix/var/nix/profiles/system'
/** switch-to-configuration output kept for the update log. */
const MAX_ACTIVATION_LOG = 12 * 1024
/** Nix output quoted in an error message (which holds 2 KiB). */
const MAX_QUOTED_OUTPUT = 1200
const MiB = 1024 * 1024

export interface NixosActivatorInit {
  /** Holds nars/, gcroots/, generations.json, xdg-cache/. */
  root: string
  /** The coordinator's cache, or a stand-in. */
  cache: NixCacheSource
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

type NixPayload = Extract<Manifest['payload'], { kind: 'nix' }>

/** What fetch found it has to do. */
interface FetchPlan {
  /** Every path of the closure. */
  closure: string[]
  /** Missing here and served from the coordinator, signatures checked. */
  served: NarInfo[]
  /**
   * Every narinfo whose signature checks out, the loopback cache's offer: should a
   * path valid a moment ago be collected before Nix gets to it, Nix fetches it too.
   */
  trusted: NarInfo[]
  /** Missing here and left to the manifest's HTTP substituters. */
  external: string[]
}

class NixosActivator implements Activator {
  readonly kind = 'nixos'
  readonly #root: string
  readonly #cache: NixCacheSource
  readonly #profile: string
  readonly #env: NodeJS.ProcessEnv
  readonly #nix: NixStore
  readonly #names: GenerationNames
  readonly #activateTimeoutMs: number
  readonly #realiseTimeoutMs: number

  constructor(init: NixosActivatorInit) {
    this.#root = init.root
    this.#cache = init.cache
    this.#profile = init.profile ?? DEFAULT_SYSTEM_PROFILE
    this.#env = init.env ?? nixosEnv()
    this.#nix = new NixStore({ env: this.#env })
    this.#names = new GenerationNames(init.root)
    this.#activateTimeoutMs = init.activateTimeoutMs ?? 30 * 60_000
    this.#realiseTimeoutMs = init.realiseTimeoutMs ?? 6 * 3_600_000
  }

  get #narDir(): string {
    return join(this.#root, 'nars')
  }

  get #pendingRoot(): string {
    return join(this.#root, 'gcroots', 'pending')
  }

  async fetch(
    manifest: Manifest,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
    log: (line: string) => void = () => {},
  ): Promise<string> {
    const payload = nixPayload(manifest)
    const top = payload.storePath
    await nixStep('nix-unavailable', () => this.#nix.version())
    if ((await this.#invalid([top])).length === 0) {
      // Still rooted, so that a garbage collection before the switch cannot take it.
      await nixStep('download-failed', () => this.#nix.addRoot(top, this.#pendingRoot))
      log(`${top} is already in the local store; nothing to fetch`)
      onProgress({ done: 0, total: 0 })
      return top
    }
    let closure: Awaited<ReturnType<NixCacheSource['closure']>>
    try {
      closure = await this.#cache.closure(top, signal)
    } catch (err) {
      if (signal.aborted || !(err instanceof NixCacheError)) throw err
      const message = `asking the coordinator for the closure of ${top}: ${err.message}`
      throw new ActivatorError('download-failed', message, { cause: err })
    }
    const plan = await this.#plan(payload, closure.narinfos, closure.missing)
    await this.#checkSpace(plan.served)
    await this.#realise(payload, plan, onProgress, signal, log)
    return top
  }

  async prepare(manifest: Manifest, _artifactPath: string): Promise<GenerationInfo> {
    const payload = nixPayload(manifest)
    const path = payload.storePath
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

  async activate(gen: GenerationInfo, previous: GenerationInfo | null): Promise<ActivationResult> {
    // Going forward the new generation says how; rolling back, the one being left does.
    const mode = activationMode(gen.activation ?? previous?.activation)
    const argv = [join(gen.path, 'bin', 'switch-to-configuration'), mode]
    const result = await runProcess(argv, {
      cwd: '/',
      env: this.#env,
      timeoutMs: this.#activateTimeoutMs,
      maxOutputBytes: MAX_ACTIVATION_LOG,
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
    await rm(join(this.#root, 'xdg-cache'), { recursive: true, force: true })
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
    return nixStep('download-failed', () => this.#nix.invalidPaths(paths))
  }

  /**
   * Decides, for every path of the closure missing here, where it comes from, and
   * refuses the update when one has no trustworthy source.
   */
  async #plan(
    payload: NixPayload,
    narinfos: readonly NarInfo[],
    missing: readonly string[],
  ): Promise<FetchPlan> {
    const byPath = new Map(narinfos.map((n) => [n.storePath, n]))
    const closure = [...new Set([...byPath.keys(), ...missing])]
    const keys = payload.trustedPublicKeys.map((k) => NixPublicKey.parse(k, 'trusted public key'))
    const external = payload.substituters.length > 0
    const checks = new Map(narinfos.map((n) => [n.storePath, checkNarInfoSignature(n, keys)]))
    const trusted = narinfos.filter((n) => checks.get(n.storePath)?.ok === true)
    const plan: FetchPlan = { closure, served: [], trusted, external: [] }
    const untrusted: string[] = []
    const unavailable: string[] = []
    for (const path of await this.#invalid(closure)) {
      const info = byPath.get(path)
      const check = checks.get(path)
      if (info !== undefined && check?.ok === true) plan.served.push(info)
      // Nix checks signatures of what the manifest's own caches send (require-sigs).
      else if (external) plan.external.push(path)
      else if (check?.ok === false) untrusted.push(check.reason)
      else unavailable.push(path)
    }
    if (untrusted.length > 0) {
      throw new ActivatorError(
        'untrusted-path',
        `refusing ${payload.storePath}: ${count(untrusted.length, 'of its paths is', 'of its paths are')} not signed by a key the manifest trusts: ` +
          `${untrusted.slice(0, 3).join('; ')}${untrusted.length > 3 ? '; …' : ''}`,
      )
    }
    if (unavailable.length > 0) {
      throw new ActivatorError(
        'download-failed',
        `the coordinator does not have ${count(unavailable.length, 'path')} of ${payload.storePath} ` +
          `(${unavailable.slice(0, 3).join(', ')}${unavailable.length > 3 ? ', …' : ''}) and the manifest names no ` +
          'other substituters; push the closure to the coordinator first',
      )
    }
    return plan
  }

  /** Refuses a download that cannot fit: the NARs in nars/, the unpacked paths in the store. */
  async #checkSpace(served: readonly NarInfo[]): Promise<void> {
    const total = served.reduce((n, i) => n + i.narSize, 0)
    if (total === 0) return
    await ensureDir(this.#narDir)
    let present = 0
    for (const info of served) {
      const file = join(this.#narDir, `${sha256HexOfNixHash(info.narHash)}.nar`)
      present += Math.min(info.narSize, (await fileSize(file)) ?? (await fileSize(`${file}.part`)) ?? 0)
    }
    const narBytes = total - present
    const narFree = await freeBytes(this.#narDir)
    if (narBytes > narFree) {
      throw new ActivatorError(
        'no-space',
        `downloading ${count(served.length, 'path')} needs ${mib(narBytes)} MiB in ${this.#narDir}, ${mib(narFree)} MiB free`,
      )
    }
    const storeFree = await freeBytes(STORE_DIR).catch(() => undefined)
    if (storeFree === undefined) return
    const shared = (await stat(this.#narDir)).dev === (await stat(STORE_DIR)).dev
    const storeBytes = total + (shared ? narBytes : 0)
    if (storeBytes > storeFree) {
      throw new ActivatorError(
        'no-space',
        `installing ${count(served.length, 'path')} needs ${mib(storeBytes)} MiB in ${STORE_DIR}` +
          `${shared ? ' (the NARs are downloaded to the same disk)' : ''}, ${mib(storeFree)} MiB free`,
      )
    }
  }

  async #realise(
    payload: NixPayload,
    plan: FetchPlan,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
    log: (line: string) => void,
  ): Promise<void> {
    const top = payload.storePath
    const total = plan.served.reduce((n, i) => n + i.narSize, 0)
    onProgress({ done: 0, total })
    // A NAR that cannot be served fails the update at once, rather than after Nix's retries,
    // unless the manifest names other caches Nix can turn to for it.
    const stop = new AbortController()
    const fallback = payload.substituters.length > 0
    const cache = await NixSubstituter.start({
      narinfos: plan.trusted,
      narDir: this.#narDir,
      fetchNar: (sha256, size, dest, progress, s) => this.#cache.fetchNar(sha256, size, dest, progress, s),
      onProgress: (done) => onProgress({ done: Math.min(done, total), total }),
      onFailure: (failure) => {
        if (!fallback) stop.abort(new Error(failure.message))
      },
    })
    const cacheHome = join(this.#root, 'xdg-cache')
    let failure: unknown
    try {
      await rm(cacheHome, { recursive: true, force: true })
      await ensureDir(cacheHome)
      await this.#nix.realise(top, {
        substituters: [cache.url, ...payload.substituters],
        trustedKeys: payload.trustedPublicKeys,
        cacheHome,
        gcRoot: this.#pendingRoot,
        timeoutMs: this.#realiseTimeoutMs,
        signal: AbortSignal.any([signal, stop.signal]),
      })
    } catch (err) {
      failure = err
    } finally {
      await cache.stop()
      await rm(cacheHome, { recursive: true, force: true })
    }
    if (failure !== undefined) {
      if (cache.failure !== null) throw new ActivatorError(cache.failure.code, cache.failure.message)
      if (signal.aborted) throw signal.reason
      throw realiseError(top, failure)
    }
    const { narsServed, bytesServed } = cache.stats
    await cache.removeDownloads()
    log(
      `fetched ${narsServed} of ${plan.closure.length} paths of ${top}, ${amount(bytesServed)} from the coordinator`,
    )
    if (plan.external.length > 0) {
      log(
        `${count(plan.external.length, 'path was', 'paths were')} left to ${payload.substituters.join(' ')}`,
      )
    }
  }
}

function nixPayload(manifest: Manifest): NixPayload {
  if (manifest.payload.kind !== 'nix') {
    throw new ActivatorError(
      'unsupported-payload',
      `the nixos activator installs nix payloads; manifest ${manifest.id} carries a ${manifest.payload.kind} payload`,
    )
  }
  return manifest.payload
}

function activationMode(mode: ActivationMode | undefined): 'switch' | 'boot' | 'test' {
  return mode === 'boot' || mode === 'test' ? mode : 'switch'
}

/** Runs a Nix call, turning its failure into an ActivatorError with `code` (or nix-unavailable). */
async function nixStep<T>(code: ActivatorErrorCode, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    throw activatorError(err, code)
  }
}

function activatorError(err: unknown, code: ActivatorErrorCode, doing?: string): ActivatorError {
  if (err instanceof ActivatorError) return err
  const prefix = doing === undefined ? '' : `${doing}: `
  if (err instanceof NixStoreError && err.code === 'not-installed')
    return new ActivatorError('nix-unavailable', err.message, { cause: err })
  return new ActivatorError(code, `${prefix}${errorMessage(err)}`, { cause: err })
}

function realiseError(top: string, err: unknown): ActivatorError {
  if (!(err instanceof NixStoreError)) return activatorError(err, 'realise-failed', `realising ${top}`)
  if (err.code === 'not-installed') return activatorError(err, 'nix-unavailable')
  const output = tail(err.output.trim(), MAX_QUOTED_OUTPUT)
  const code = /No space left on device/.test(err.output) ? 'no-space' : 'realise-failed'
  return new ActivatorError(code, `Nix could not fetch ${top}: ${output || err.message}`, { cause: err })
}

function distinctPaths(generations: readonly ProfileGeneration[]): string[] {
  // Ordered by the newest generation pointing at each path.
  const last = new Map<string, number>()
  for (const g of generations) last.set(g.path, g.number)
  return [...last.entries()].sort((a, b) => a[1] - b[1]).map(([path]) => path)
}

async function freeBytes(dir: string): Promise<number> {
  const fs = await statfs(dir)
  return fs.bavail * fs.bsize
}

async function emptyDir(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[])
  for (const name of names) await rm(join(dir, name), { recursive: true, force: true })
}

function readLinkTarget(link: string): Promise<string | undefined> {
  return readlink(link).catch(() => undefined)
}

/** "1 path", "3 paths". */
function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}

function amount(bytes: number): string {
  return bytes >= MiB ? `${mib(bytes)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1)
}

function tail(text: string, max: number): string {
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`
}
