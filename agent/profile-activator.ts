/**
 * Activators turn a verified manifest into a running generation. The updater
 * drives them through fetch → prepare → switchTo → activate and, on failure,
 * switchTo(previous) → activate(previous); every method must be safe to call
 * again after a crash part-way through it.
 *
 * The `profile` activator works on any Linux box without Nix: each generation is
 * an unpacked archive under `<root>/generations/<n>-<name>/`, and `<root>/current`
 * is a symlink to the active one, replaced atomically (rename over it), so a
 * reader or a power cut sees the old generation or the new one, never a mix.
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

import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, readFile, readlink, rename, rm, stat, symlink, unlink } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { z } from 'zod'
import {
  CodedError,
  ensureDir,
  fileSize,
  fsyncDir,
  isTempName,
  TEMP_MARKER,
  tempPathFor,
  writeFileAtomic,
} from '../lib/index.ts'
import type { BlobSource, Manifest } from '../protocol/index.ts'
import { describeResult, runProcess } from './health.ts'

// ---------------------------------------------------------------- the activator contract

/** One installed generation, as an activator identifies it. Persisted in update.json. */
export interface GenerationInfo {
  /** Unique within the activator and stable across restarts, e.g. "7-web-2026.11.23". */
  id: string
  /** The manifest's generation name. */
  name: string
  /** Absolute path of the generation (a directory here; a store path for nixos). */
  path: string
  /** The manifest that produced it, when known. */
  manifestId: string | null
}

export const generationInfoSchema = z.strictObject({
  id: z.string().min(1).max(256),
  name: z.string().min(1).max(128),
  path: z.string().min(1).max(4096),
  manifestId: z.string().max(64).nullable(),
})

export interface FetchProgress {
  done: number
  total: number
}

export interface Activator {
  /** Which activation modes it handles, e.g. 'profile'. */
  readonly kind: string
  /**
   * Downloads the payload and verifies it against the manifest. Resumes a
   * previous partial download. Resolves with the local path of the verified artifact.
   */
  fetch(
    manifest: Manifest,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
  ): Promise<string>
  /**
   * Makes a complete, not yet active generation from a verified artifact. Idempotent
   * per manifest: called again after a crash it returns the generation it made before.
   */
  prepare(manifest: Manifest, artifactPath: string): Promise<GenerationInfo>
  /** Atomically makes `gen` the current generation; null leaves no generation current. */
  switchTo(gen: GenerationInfo | null): Promise<void>
  /** Runs the generation's activation (services, hooks); `previous` is the one being left. */
  activate(gen: GenerationInfo, previous: GenerationInfo | null): Promise<void>
  current(): Promise<GenerationInfo | null>
  /** Installed generations, oldest first. */
  list(): Promise<GenerationInfo[]>
  /** The newest installed generation older than `gen`, for a manual rollback. */
  previousOf(gen: GenerationInfo): Promise<GenerationInfo | null>
  /**
   * Deletes all but the newest `keep` generations, never the current one nor any in
   * `protect`, plus leftovers of interrupted work. Resolves with the deleted ids.
   */
  gc(keep: number, protect: readonly GenerationInfo[]): Promise<string[]>
}

export type ActivatorErrorCode =
  | 'unsupported-payload'
  | 'download-failed'
  | 'artifact-mismatch'
  | 'bad-archive'
  | 'unsafe-archive'
  | 'prepare-failed'
  | 'switch-failed'
  | 'activation-failed'

export class ActivatorError extends CodedError<ActivatorErrorCode> {
  override name = 'ActivatorError'
}

// ---------------------------------------------------------------- blob fetchers

/**
 * Downloads one content-addressed blob. The network side supplies one for
 * `coordinator` sources (over /fleetmesh/blob/1); httpBlobFetcher handles `http`.
 *
 * Contract: write to `dest`, appending to the bytes already there (their count is
 * the file's size, so an interrupted download resumes), report the total byte
 * count present via onProgress, and never write more than `size` bytes. The caller
 * verifies size and hash afterwards.
 */
export interface BlobFetcher {
  fetch(
    sha256: string,
    size: number,
    sources: readonly BlobSource[],
    dest: string,
    onProgress: (done: number) => void,
    signal: AbortSignal,
  ): Promise<void>
}

/** Tries the sources in manifest order, each with the fetcher for its kind. */
export function routeBlobFetcher(routes: Partial<Record<BlobSource['kind'], BlobFetcher>>): BlobFetcher {
  return {
    async fetch(sha256, size, sources, dest, onProgress, signal) {
      const problems: string[] = []
      for (const source of sources) {
        const fetcher = routes[source.kind]
        if (fetcher === undefined) {
          problems.push(`${source.kind}: no fetcher configured`)
          continue
        }
        try {
          await fetcher.fetch(sha256, size, [source], dest, onProgress, signal)
          return
        } catch (err) {
          if (signal.aborted) throw err
          problems.push(`${describeSource(source)}: ${(err as Error).message}`)
        }
      }
      throw new ActivatorError(
        'download-failed',
        `could not download blob ${sha256} from any of its ${sources.length} sources (${problems.join('; ')})`,
      )
    },
  }
}

const describeSource = (s: BlobSource) => (s.kind === 'http' ? s.url : s.kind)

export interface HttpBlobFetcherInit {
  /** Give up on a source that sends nothing for this long. Default 60 s. */
  idleTimeoutMs?: number
}

class HttpFetchError extends Error {
  override name = 'HttpFetchError'
}

/** Fetches `http` sources with fetch(), resuming with a Range request. */
export function httpBlobFetcher(init: HttpBlobFetcherInit = {}): BlobFetcher {
  const idleTimeoutMs = init.idleTimeoutMs ?? 60_000
  return {
    async fetch(sha256, size, sources, dest, onProgress, signal) {
      const urls = sources.flatMap((s) => (s.kind === 'http' ? [s.url] : []))
      if (urls.length === 0) {
        throw new ActivatorError('download-failed', `blob ${sha256} has no http source`)
      }
      const problems: string[] = []
      for (const url of urls) {
        try {
          await fetchHttp(url, size, dest, onProgress, signal, idleTimeoutMs)
          return
        } catch (err) {
          if (signal.aborted) throw err
          problems.push(`${url}: ${(err as Error).message}`)
        }
      }
      throw new ActivatorError(
        'download-failed',
        `could not download blob ${sha256} over HTTP (${problems.join('; ')})`,
      )
    },
  }
}

async function fetchHttp(
  url: string,
  size: number,
  dest: string,
  onProgress: (done: number) => void,
  signal: AbortSignal,
  idleTimeoutMs: number,
): Promise<void> {
  let offset = (await fileSize(dest)) ?? 0
  if (offset > size) offset = 0
  if (offset === size) {
    onProgress(size)
    return
  }
  const idle = new AbortController()
  let idleTimer = setTimeout(() => idle.abort(), idleTimeoutMs)
  const poke = () => {
    clearTimeout(idleTimer)
    idleTimer = setTimeout(() => idle.abort(), idleTimeoutMs)
  }
  const combined = AbortSignal.any([signal, idle.signal])
  try {
    const response = await fetch(url, {
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal: combined,
      redirect: 'follow',
    })
    if (response.status === 206) {
      const start = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')?.[1]
      if (start === undefined || Number(start) !== offset) {
        await response.body?.cancel()
        throw new HttpFetchError(`server answered the range request from ${offset} with "${start}"`)
      }
    } else if (response.status === 200) {
      // The server ignored the Range header and is sending the whole blob.
      offset = 0
    } else {
      await response.body?.cancel()
      throw new HttpFetchError(`HTTP ${response.status} ${response.statusText}`)
    }
    if (response.body === null) throw new HttpFetchError('response has no body')
    const handle = await open(dest, offset === 0 ? 'w' : 'a', 0o600)
    try {
      onProgress(offset)
      for await (const chunk of response.body) {
        poke()
        if (offset + chunk.byteLength > size) {
          throw new HttpFetchError(`server sent more than the expected ${size} bytes`)
        }
        await handle.write(chunk)
        offset += chunk.byteLength
        onProgress(offset)
      }
      await handle.sync()
    } finally {
      await handle.close()
    }
    if (offset !== size) throw new HttpFetchError(`connection ended after ${offset} of ${size} bytes`)
  } catch (err) {
    if (idle.signal.aborted && !signal.aborted) {
      throw new HttpFetchError(`no data for ${idleTimeoutMs} ms`, { cause: err })
    }
    throw err
  } finally {
    clearTimeout(idleTimer)
  }
}

// ---------------------------------------------------------------- the profile activator

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

/** Written into every generation so prepare can find what a crashed earlier call already made. */
const MARKER = '.fleetmesh-generation.json'
const markerSchema = z.object({ manifestId: z.string(), name: z.string(), sha256: z.string() })
const GENERATION_DIR = /^(\d+)-([A-Za-z0-9._+-]+)$/
const TRASH_MARKER = '.trash-'

export function profileActivator(init: ProfileActivatorInit): Activator {
  return new ProfileActivator(init)
}

class ProfileActivator implements Activator {
  readonly kind = 'profile'
  readonly #root: string
  readonly #generations: string
  readonly #downloads: string
  readonly #link: string
  readonly #fetcher: BlobFetcher
  readonly #activateTimeoutMs: number
  readonly #fetchAttempts: number
  readonly #env: Record<string, string>

  constructor(init: ProfileActivatorInit) {
    this.#root = init.root
    this.#generations = join(init.root, 'generations')
    this.#downloads = join(init.root, 'downloads')
    this.#link = join(init.root, 'current')
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
    const payload = archivePayload(manifest)
    const { sha256, size } = payload
    await ensureDir(this.#downloads)
    const final = join(this.#downloads, `${sha256}.blob`)
    const part = join(this.#downloads, `${sha256}.part`)

    if ((await fileSize(final)) !== undefined) {
      if ((await fileSize(final)) === size && (await sha256File(final)) === sha256) {
        onProgress({ done: size, total: size })
        return final
      }
      await unlink(final)
    }
    if (((await fileSize(part)) ?? 0) > size) await unlink(part)

    // A complete .part is what a crash between download and rename leaves behind.
    for (let attempt = 1; (await fileSize(part)) !== size; attempt++) {
      try {
        await this.#fetcher.fetch(
          sha256,
          size,
          payload.sources,
          part,
          (done) => onProgress({ done, total: size }),
          signal,
        )
        break
      } catch (err) {
        if (signal.aborted || attempt >= this.#fetchAttempts) {
          if (signal.aborted || err instanceof ActivatorError) throw err
          throw new ActivatorError(
            'download-failed',
            `downloading ${sha256} failed after ${attempt} attempts: ${(err as Error).message}`,
            { cause: err },
          )
        }
        await delay(250 * attempt, signal)
      }
    }

    const got = (await fileSize(part)) ?? 0
    if (got > size) {
      await unlink(part)
      throw new ActivatorError(
        'artifact-mismatch',
        `download of ${sha256} is ${got} bytes, but the manifest says ${size}; discarded it`,
      )
    }
    if (got < size) {
      throw new ActivatorError(
        'download-failed',
        `download of ${sha256} stopped at ${got} of ${size} bytes; it will resume on the next attempt`,
      )
    }
    const actual = await sha256File(part)
    if (actual !== sha256) {
      await unlink(part)
      throw new ActivatorError(
        'artifact-mismatch',
        `downloaded artifact has sha256 ${actual}, but the manifest says ${sha256}; discarded it. ` +
          'The source serves different content than the admin signed: check the blob source',
      )
    }
    await fsyncFile(part)
    await rename(part, final)
    await fsyncDir(this.#downloads)
    return final
  }

  async prepare(manifest: Manifest, artifactPath: string): Promise<GenerationInfo> {
    const payload = archivePayload(manifest)
    await ensureDir(this.#generations, 0o755)
    const existing = (await this.list()).find((g) => g.manifestId === manifest.id)
    if (existing !== undefined) return existing
    await this.#removeLeftovers()

    const gzip = await detectArchive(artifactPath)
    await checkMembers(artifactPath, gzip)

    const tmp = join(this.#generations, `${TEMP_MARKER}${randomBytes(6).toString('hex')}`)
    await mkdir(tmp, { mode: 0o755 })
    try {
      await tar(['-x', ...(gzip ? ['-z'] : []), '-f', artifactPath, '-C', tmp, '--no-same-owner'])
      const marker = { manifestId: manifest.id, name: manifest.generation, sha256: payload.sha256 }
      await writeFileAtomic(join(tmp, MARKER), `${JSON.stringify(marker)}\n`, 0o644)
      // The rename below publishes the generation; its files must be on disk first,
      // or a power cut could leave a "complete" generation full of empty files.
      await fsyncTree(tmp)
      const number = (await this.list()).reduce((max, g) => Math.max(max, generationNumber(g.id)), 0) + 1
      const id = `${number}-${manifest.generation}`
      await rename(tmp, join(this.#generations, id))
      await fsyncDir(this.#generations)
      await unlink(artifactPath).catch(() => {})
      return { id, name: manifest.generation, path: join(this.#generations, id), manifestId: manifest.id }
    } catch (err) {
      await rm(tmp, { recursive: true, force: true })
      if (err instanceof ActivatorError) throw err
      throw new ActivatorError(
        'prepare-failed',
        `could not unpack ${basename(artifactPath)}: ${(err as Error).message}`,
        {
          cause: err,
        },
      )
    }
  }

  async switchTo(gen: GenerationInfo | null): Promise<void> {
    if (gen === null) {
      await unlink(this.#link).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err
      })
      await fsyncDir(this.#root)
      return
    }
    const dir = join(this.#generations, gen.id)
    const info = await stat(dir).catch(() => undefined)
    if (info?.isDirectory() !== true) {
      throw new ActivatorError('switch-failed', `generation ${gen.id} is not installed (no directory ${dir})`)
    }
    const tmp = tempPathFor(this.#link)
    await symlink(join('generations', gen.id), tmp)
    try {
      await rename(tmp, this.#link)
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw new ActivatorError('switch-failed', `could not switch to ${gen.id}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    await fsyncDir(this.#root)
  }

  async activate(gen: GenerationInfo, previous: GenerationInfo | null): Promise<void> {
    const hook = join(gen.path, 'activate')
    const info = await stat(hook).catch(() => undefined)
    if (info === undefined || !info.isFile() || (info.mode & 0o111) === 0) return
    const result = await runProcess([hook], {
      cwd: gen.path,
      timeoutMs: this.#activateTimeoutMs,
      env: {
        PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        HOME: process.env.HOME ?? '/',
        LANG: process.env.LANG ?? 'C.UTF-8',
        ...this.#env,
        FLEETMESH_GENERATION: gen.name,
        FLEETMESH_GENERATION_DIR: gen.path,
        FLEETMESH_PREVIOUS: previous?.path ?? '',
      },
    })
    if (result.code !== 0) {
      throw new ActivatorError(
        'activation-failed',
        `activation of generation ${gen.id} failed: ${describeResult([hook], result)}`,
      )
    }
  }

  async current(): Promise<GenerationInfo | null> {
    let target: string
    try {
      target = await readlink(this.#link)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
    return this.#load(basename(target))
  }

  async list(): Promise<GenerationInfo[]> {
    let names: string[]
    try {
      names = await readdir(this.#generations)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    const ids = names.filter((n) => GENERATION_DIR.test(n))
    ids.sort((a, b) => generationNumber(a) - generationNumber(b))
    return Promise.all(ids.map((id) => this.#load(id)))
  }

  async previousOf(gen: GenerationInfo): Promise<GenerationInfo | null> {
    const older = (await this.list()).filter((g) => generationNumber(g.id) < generationNumber(gen.id))
    return older.at(-1) ?? null
  }

  async gc(keep: number, protect: readonly GenerationInfo[]): Promise<string[]> {
    const all = await this.list()
    const current = await this.current()
    const kept = new Set([
      ...all.slice(Math.max(0, all.length - keep)).map((g) => g.id),
      ...protect.map((g) => g.id),
      ...(current !== null ? [current.id] : []),
    ])
    const removed: string[] = []
    for (const gen of all) {
      if (kept.has(gen.id)) continue
      // Rename first so a deletion cut short never leaves a half-deleted "generation".
      const trash = join(this.#generations, `${TRASH_MARKER}${gen.id}-${randomBytes(4).toString('hex')}`)
      await rename(gen.path, trash)
      await rm(trash, { recursive: true, force: true })
      removed.push(gen.id)
    }
    await this.#removeLeftovers()
    await rm(this.#downloads, { recursive: true, force: true })
    return removed
  }

  async #load(id: string): Promise<GenerationInfo> {
    const match = GENERATION_DIR.exec(id)
    const path = join(this.#generations, id)
    let manifestId: string | null = null
    try {
      const marker = markerSchema.safeParse(JSON.parse(await readFile(join(path, MARKER), 'utf8')))
      if (marker.success) manifestId = marker.data.manifestId
    } catch {
      // No marker: made by hand or by an older agent; still a usable generation.
    }
    return { id, name: match?.[2] ?? id, path, manifestId }
  }

  async #removeLeftovers(): Promise<void> {
    const names = await readdir(this.#generations).catch(() => [] as string[])
    for (const name of names) {
      if (isTempName(name) || name.startsWith(TRASH_MARKER)) {
        await rm(join(this.#generations, name), { recursive: true, force: true })
      }
    }
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

const generationNumber = (id: string): number => Number(GENERATION_DIR.exec(id)?.[1] ?? 0)

// ---------------------------------------------------------------- archives

/** Returns true for gzip, false for plain tar; anything else is refused. */
async function detectArchive(path: string): Promise<boolean> {
  const handle = await open(path, 'r')
  const head = Buffer.alloc(512)
  let length: number
  try {
    length = (await handle.read(head, 0, 512, 0)).bytesRead
  } finally {
    await handle.close()
  }
  if (length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return true
  if (length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return false
  throw new ActivatorError(
    'bad-archive',
    `${basename(path)} is neither a tar nor a gzip-compressed tar archive; the profile activator needs one of those`,
  )
}

const TAR_MAX_BUFFER = 64 * 1024 * 1024

function tar(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'tar',
      args,
      { maxBuffer: TAR_MAX_BUFFER, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (err !== null) reject(new Error(`tar ${args[0]} failed: ${stderr.trim() || err.message}`))
        else resolve(stdout)
      },
    )
  })
}

/**
 * Refuses members that would land outside the generation directory and device
 * nodes, before anything is unpacked. GNU tar strips such paths by itself too; this
 * check turns a silently altered tree into a clear refusal.
 */
async function checkMembers(path: string, gzip: boolean): Promise<void> {
  const z = gzip ? ['-z'] : []
  const names = (await tar(['-t', ...z, '-f', path])).split('\n').filter((l) => l.length > 0)
  const verbose = (await tar(['-t', '-v', ...z, '-f', path])).split('\n').filter((l) => l.length > 0)
  const problems: string[] = []
  for (const name of names) {
    if (name.startsWith('/')) problems.push(`"${name}" is an absolute path`)
    else if (name.split('/').includes('..')) problems.push(`"${name}" climbs out with ".."`)
  }
  for (const line of verbose) {
    const type = line[0]
    if (type === 'b' || type === 'c') problems.push(`device node: ${line}`)
  }
  if (problems.length > 0) {
    throw new ActivatorError(
      'unsafe-archive',
      `refusing to unpack ${basename(path)}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` and ${problems.length - 5} more` : ''}`,
    )
  }
}

// ---------------------------------------------------------------- file helpers

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

async function fsyncTree(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) await fsyncTree(path)
    else if (entry.isFile()) await fsyncFile(path)
  }
  await fsyncDir(dir)
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer)
        resolve()
      },
      { once: true },
    )
  })
}
