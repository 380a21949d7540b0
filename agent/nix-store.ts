/**
 * The local Nix, through its command-line tools: which store paths are
 * missing, realising a closure from binary caches, and the generations of a
 * profile. Every call goes through `runProcess` with a deadline and bounded
 * output; a failure is a {@link NixStoreError} carrying the tail of what Nix
 * printed.
 *
 * Realising never builds (`--max-jobs 0`): a device only substitutes closures
 * built elsewhere, and checks their signatures (`require-sigs`). The narinfo
 * disk cache is bypassed (TTLs 0 and a fresh `XDG_CACHE_HOME`), because Nix
 * would otherwise remember a narinfo that was missing or unsigned a moment ago.
 *
 * @example
 *
 * ```ts
 * const nix = new NixStore()
 * await nix.version()                                  // rejects with 'not-installed' when there is no Nix
 * await nix.realise(path, { substituters: ['http://127.0.0.1:4711'], trustedKeys, cacheHome, gcRoot })
 * await nix.setProfile('/nix/var/nix/profiles/system', path)
 * ```
 */
import { lstat, readdir, readlink } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import {
  CodedError,
  commandEnv,
  describeResult,
  ensureDir,
  type RunResult,
  runProcess,
} from '../lib/index.ts'

export type NixStoreErrorCode = 'not-installed' | 'failed' | 'unexpected-output'

export class NixStoreError extends CodedError<NixStoreErrorCode> {
  override name = 'NixStoreError'
  /** The tail of what Nix printed, when it ran. */
  readonly output: string
  constructor(code: NixStoreErrorCode, message: string, output = '') {
    super(code, message)
    this.output = output
  }
}

export interface NixStoreInit {
  /** Environment for every Nix call. Default: the agent's PATH, HOME and LANG. */
  env?: NodeJS.ProcessEnv
  /** Deadline for queries and profile changes. Default 2 minutes. */
  timeoutMs?: number
  /** Bytes of Nix's output kept for error messages. Default 8 KiB. */
  maxOutputBytes?: number
}

export interface RealiseOptions {
  /** Binary cache URLs, in order of preference. */
  substituters: readonly string[]
  /** `name:base64` keys a substituted path must be signed by. */
  trustedKeys: readonly string[]
  /** A fresh directory for Nix's narinfo disk cache. */
  cacheHome: string
  /** An indirect GC root that keeps the realised path until a profile refers to it. */
  gcRoot: string
  /** Seconds Nix waits for a silent download; the loopback cache is silent while it fetches over the mesh. */
  stalledDownloadTimeoutS?: number
  timeoutMs?: number
  signal?: AbortSignal
}

export interface ProfileGeneration {
  number: number
  /** As Nix prints it: "2026-11-29 21:49:33", local time. */
  date: string
  current: boolean
  /** The store path `<profile>-<number>-link` points at. */
  path: string
}

/** Paths per `nix-store --check-validity` call, well below the kernel's argv limit. */
const PATHS_PER_CALL = 500

export class NixStore {
  readonly #env: NodeJS.ProcessEnv
  readonly #timeoutMs: number
  readonly #maxOutputBytes: number

  constructor(init: NixStoreInit = {}) {
    this.#env = init.env ?? commandEnv({})
    this.#timeoutMs = init.timeoutMs ?? 120_000
    this.#maxOutputBytes = init.maxOutputBytes ?? 8192
  }

  /** Nix's version line; rejects with 'not-installed' when there is no Nix to run. */
  async version(): Promise<string> {
    return (await this.#run(['nix-store', '--version'])).output.trim()
  }

  /** The paths among `paths` that are not valid in the local store. */
  async invalidPaths(paths: readonly string[]): Promise<string[]> {
    const invalid: string[] = []
    for (let i = 0; i < paths.length; i += PATHS_PER_CALL) {
      const batch = paths.slice(i, i + PATHS_PER_CALL)
      // The output is one line per invalid path: allow for all of them.
      const result = await this.#run(['nix-store', '--check-validity', '--print-invalid', ...batch], {
        maxOutputBytes: batch.reduce((n, p) => n + p.length + 1, 0) + this.#maxOutputBytes,
      })
      const asked = new Set(batch)
      for (const line of result.output.split('\n')) {
        const path = line.trim()
        if (asked.has(path)) invalid.push(path)
      }
    }
    return invalid
  }

  /** Substitutes `path` and its closure from the given caches; never builds. */
  async realise(path: string, options: RealiseOptions): Promise<void> {
    await ensureDir(dirname(options.gcRoot))
    const argv = [
      'nix-store',
      '--realise',
      path,
      '--add-root',
      options.gcRoot,
      '--indirect',
      '--max-jobs',
      '0',
      '--option',
      'substituters',
      options.substituters.join(' '),
      '--option',
      'trusted-public-keys',
      options.trustedKeys.join(' '),
      '--option',
      'require-sigs',
      'true',
      '--option',
      'narinfo-cache-negative-ttl',
      '0',
      '--option',
      'narinfo-cache-positive-ttl',
      '0',
      '--option',
      'stalled-download-timeout',
      String(options.stalledDownloadTimeoutS ?? 3600),
    ]
    await this.#run(argv, {
      env: { ...this.#env, XDG_CACHE_HOME: options.cacheHome },
      timeoutMs: options.timeoutMs ?? 6 * 3_600_000,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    })
  }

  /** Makes `gcRoot` an indirect GC root for `path`, which must be valid already. */
  async addRoot(path: string, gcRoot: string): Promise<void> {
    await ensureDir(dirname(gcRoot))
    await this.#run(['nix-store', '--realise', path, '--add-root', gcRoot, '--indirect', '--max-jobs', '0'])
  }

  /** Makes `path` the profile's newest generation and points the profile at it. */
  async setProfile(profile: string, path: string): Promise<void> {
    await ensureDir(dirname(profile), 0o755)
    await this.#run(['nix-env', '--profile', profile, '--set', path])
  }

  /**
   * The profile's generations, oldest first; none when the profile does not
   * exist. Read from the links themselves, as Nix does (`<profile>-<n>-link` →
   * store path, `<profile>` → the current link), so that knowing what runs
   * needs no Nix: an agent on a device whose Nix is broken still starts and
   * reports, and only the update fails.
   */
  async generations(profile: string): Promise<ProfileGeneration[]> {
    const dir = dirname(profile)
    const prefix = `${basename(profile)}-`
    let names: string[]
    try {
      names = await readdir(dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    const current = await readlink(profile).catch(() => undefined)
    const generations: ProfileGeneration[] = []
    for (const name of names) {
      if (!name.startsWith(prefix) || !name.endsWith('-link')) continue
      const number = Number(name.slice(prefix.length, -'-link'.length))
      if (!Number.isSafeInteger(number) || number < 1) continue
      // A generation deleted between the listing and here is simply gone.
      const target = await readlink(join(dir, name)).catch(() => undefined)
      if (target === undefined) continue
      const info = await lstat(join(dir, name))
      generations.push({
        number,
        date: info.mtime.toISOString(),
        current: current === name || (current !== undefined && resolve(dir, current) === join(dir, name)),
        path: resolve(dir, target),
      })
    }
    return generations.sort((a, b) => a.number - b.number)
  }

  /** Points the profile at an existing generation (a rollback). */
  async switchGeneration(profile: string, number: number): Promise<void> {
    await this.#run(['nix-env', '--profile', profile, '--switch-generation', String(number)])
  }

  /** Deletes generations by number; Nix refuses to delete the current one. */
  async deleteGenerations(profile: string, numbers: readonly number[]): Promise<void> {
    if (numbers.length === 0) return
    await this.#run(['nix-env', '--profile', profile, '--delete-generations', ...numbers.map(String)])
  }

  async #run(
    argv: string[],
    options: {
      env?: NodeJS.ProcessEnv
      timeoutMs?: number
      signal?: AbortSignal
      maxOutputBytes?: number
    } = {},
  ): Promise<RunResult> {
    const result = await runProcess(argv, {
      cwd: '/',
      env: options.env ?? this.#env,
      timeoutMs: options.timeoutMs ?? this.#timeoutMs,
      maxOutputBytes: options.maxOutputBytes ?? this.#maxOutputBytes,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    })
    if (result.spawnError !== null && /ENOENT/.test(result.spawnError)) {
      throw new NixStoreError(
        'not-installed',
        `${argv[0]} was not found on PATH (${(options.env ?? this.#env).PATH ?? ''}): ` +
          'this device has no Nix; install it or use --activator profile',
      )
    }
    if (result.code !== 0) {
      // A long list of store paths would drown what failed.
      const shown = argv.length > 8 ? [...argv.slice(0, 4), `… (${argv.length - 4} more arguments)`] : argv
      throw new NixStoreError('failed', describeResult(shown, result), result.output)
    }
    return result
  }
}
