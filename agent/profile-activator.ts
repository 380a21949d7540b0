/**
 * The `profile` activator works on any Linux box without Nix: each generation is
 * an unpacked archive under `<root>/generations/<n>-<name>/`, and `<root>/current`
 * is a symlink to the active one, replaced atomically (see generation-store.ts).
 * Downloads are kept, verified, under `<root>/downloads/` (artifact-download.ts);
 * activating a generation runs its executable `activate` file, if it has one.
 *
 * @example
 *
 * ```ts
 * const activator = profileActivator({ root: '/var/lib/fleetmesh/profile', fetcher: httpBlobFetcher() })
 * const artifact = await activator.fetch(manifest, (p) => log(p), signal)
 * const gen = await activator.prepare(manifest, artifact)
 * await activator.switchTo(gen)
 * await activator.activate(gen, previous)
 * ```
 */
import { rm, stat, unlink } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { commandEnv, describeResult, errorMessage, runProcess } from '../lib/index.ts'
import type { Manifest } from '../protocol/index.ts'
import {
  type ActivationResult,
  type Activator,
  ActivatorError,
  type FetchProgress,
  type GenerationInfo,
  type LiveOutput,
} from './activator.ts'
import { extractArchive, inspectArchive } from './archive.ts'
import { downloadArtifact } from './artifact-download.ts'
import type { BlobFetcher } from './blob-fetcher.ts'
import { GenerationStore } from './generation-store.ts'

export interface ProfileActivatorInit {
  /** Holds generations/, downloads/ and the `current` symlink. */
  root: string
  fetcher: BlobFetcher
  /** How long an `activate` hook may run. Default 5 minutes. */
  activateTimeoutMs?: number
  /** Download attempts (resuming each time) before giving up. Default 3. */
  fetchAttempts?: number
  /** Extra environment for `activate` hooks, on top of PATH, HOME, LANG and FLEETMESH_*. */
  env?: Record<string, string>
}

export function profileActivator(init: ProfileActivatorInit): Activator {
  return new ProfileActivator(init)
}

class ProfileActivator implements Activator {
  readonly kind = 'profile'
  readonly #store: GenerationStore
  readonly #downloads: string
  readonly #fetcher: BlobFetcher
  readonly #activateTimeoutMs: number
  readonly #fetchAttempts: number
  readonly #env: Record<string, string>

  constructor(init: ProfileActivatorInit) {
    this.#store = new GenerationStore(init.root)
    this.#downloads = join(init.root, 'downloads')
    this.#fetcher = init.fetcher
    this.#activateTimeoutMs = init.activateTimeoutMs ?? 300_000
    this.#fetchAttempts = init.fetchAttempts ?? 3
    this.#env = init.env ?? {}
  }

  async fetch(
    manifest: Manifest,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
  ): Promise<string> {
    const download = { dir: this.#downloads, fetcher: this.#fetcher, attempts: this.#fetchAttempts }
    return downloadArtifact(download, archivePayload(manifest), onProgress, signal)
  }

  async prepare(manifest: Manifest, artifactPath: string): Promise<GenerationInfo> {
    const payload = archivePayload(manifest)
    const existing = (await this.#store.list()).find((g) => g.manifestId === manifest.id)
    if (existing !== undefined) return existing
    await this.#store.tidy()

    const format = await inspectArchive(artifactPath)
    const staging = await this.#store.stage()
    try {
      await extractArchive(artifactPath, format, staging)
      const gen = await this.#store.publish(staging, {
        manifestId: manifest.id,
        name: manifest.generation,
        sha256: payload.sha256,
      })
      await unlink(artifactPath).catch(() => {})
      return gen
    } catch (err) {
      await rm(staging, { recursive: true, force: true })
      if (err instanceof ActivatorError) throw err
      throw new ActivatorError(
        'prepare-failed',
        `could not unpack ${basename(artifactPath)}: ${errorMessage(err)}`,
        { cause: err },
      )
    }
  }

  switchTo(gen: GenerationInfo | null): Promise<void> {
    return this.#store.switchTo(gen)
  }

  async activate(
    gen: GenerationInfo,
    previous: GenerationInfo | null,
    live?: LiveOutput,
  ): Promise<ActivationResult> {
    const hook = join(gen.path, 'activate')
    const info = await stat(hook).catch(() => undefined)
    if (info === undefined || !info.isFile() || (info.mode & 0o111) === 0) return {}
    live?.line(`$ ${hook}`)
    const result = await runProcess([hook], {
      cwd: gen.path,
      timeoutMs: this.#activateTimeoutMs,
      env: commandEnv({
        ...this.#env,
        FLEETMESH_GENERATION: gen.name,
        FLEETMESH_GENERATION_DIR: gen.path,
        FLEETMESH_PREVIOUS: previous?.path ?? '',
      }),
      ...(live !== undefined ? { onOutput: live.write } : {}),
    })
    const output = result.output.trimEnd()
    const log = output === '' ? undefined : `$ ${hook}\n${output}`
    if (result.code !== 0) {
      throw new ActivatorError(
        'activation-failed',
        `activation of generation ${gen.id} failed: ${describeResult([hook], result)}`,
        log === undefined ? {} : { log },
      )
    }
    return log === undefined ? {} : { log }
  }

  current(): Promise<GenerationInfo | null> {
    return this.#store.current()
  }

  list(): Promise<GenerationInfo[]> {
    return this.#store.list()
  }

  previousOf(gen: GenerationInfo): Promise<GenerationInfo | null> {
    return this.#store.previousOf(gen)
  }

  async gc(keep: number, protect: readonly GenerationInfo[]): Promise<string[]> {
    const removed = await this.#store.gc(keep, protect)
    await rm(this.#downloads, { recursive: true, force: true })
    return removed
  }
}

function archivePayload(manifest: Manifest): Extract<Manifest['payload'], { kind: 'archive' }> {
  if (manifest.payload.kind !== 'archive') {
    throw new ActivatorError(
      'unsupported-payload',
      `the profile activator installs archive payloads; manifest ${manifest.id} carries a ${manifest.payload.kind} payload`,
    )
  }
  return manifest.payload
}
