/**
 * The `profile` activator's generations on disk:
 *
 *   <root>/generations/<n>-<name>/   one unpacked generation each, numbered in install order
 *   <root>/current                   symlink to the active one (relative: generations/<n>-<name>)
 *
 * A generation is staged in a temporary directory and published by one rename,
 * and `current` is replaced by renaming a new symlink over it, so a reader or a
 * power cut sees a whole generation or none, the old link or the new one.
 *
 * @example
 *
 * ```ts
 * const store = new GenerationStore('/var/lib/fleetmesh/profile')
 * await store.tidy()
 * const staging = await store.stage()
 * await extractArchive(artifact, format, staging)
 * const gen = await store.publish(staging, { manifestId, name: 'web-7', sha256 })
 * await store.switchTo(gen)
 * ```
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readlink, rename, rm, stat, symlink, unlink } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { z } from 'zod'
import {
  ensureDir,
  errorMessage,
  fsyncDir,
  fsyncTree,
  isTempName,
  readJson,
  TEMP_MARKER,
  tempPathFor,
  writeJsonAtomic,
} from '../lib/index.ts'
import { ActivatorError, type GenerationInfo } from './activator.ts'

/** Written into every generation so prepare can find what a crashed earlier call already made. */
const MARKER = '.fleetmesh-generation.json'
const markerSchema = z.object({ manifestId: z.string(), name: z.string(), sha256: z.string() })
export type GenerationMarker = z.infer<typeof markerSchema>

const GENERATION_DIR = /^(\d+)-([A-Za-z0-9._+-]+)$/
const TRASH_MARKER = '.trash-'

const generationNumber = (id: string): number => Number(GENERATION_DIR.exec(id)?.[1] ?? 0)

export class GenerationStore {
  readonly #root: string
  readonly #generations: string
  readonly #link: string

  constructor(root: string) {
    this.#root = root
    this.#generations = join(root, 'generations')
    this.#link = join(root, 'current')
  }

  /** Installed generations, oldest first. */
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

  /** The generation `current` points at, or null when there is no link. */
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

  /** The newest installed generation older than `gen`. */
  async previousOf(gen: GenerationInfo): Promise<GenerationInfo | null> {
    const older = (await this.list()).filter((g) => generationNumber(g.id) < generationNumber(gen.id))
    return older.at(-1) ?? null
  }

  /** Creates the generations directory, or clears what interrupted work left in it. */
  async tidy(): Promise<void> {
    await ensureDir(this.#generations, 0o755)
    await this.#removeLeftovers()
  }

  /** An empty directory to build the next generation in; {@link publish} or remove it. */
  async stage(): Promise<string> {
    const dir = join(this.#generations, `${TEMP_MARKER}${randomBytes(6).toString('hex')}`)
    await mkdir(dir, { mode: 0o755 })
    return dir
  }

  /** Marks a staged directory and publishes it as the next-numbered generation. */
  async publish(staged: string, marker: GenerationMarker): Promise<GenerationInfo> {
    await writeJsonAtomic(join(staged, MARKER), marker, 0o644)
    // The rename below publishes the generation; its files must be on disk first,
    // or a power cut could leave a "complete" generation full of empty files.
    await fsyncTree(staged)
    const number = (await this.list()).reduce((max, g) => Math.max(max, generationNumber(g.id)), 0) + 1
    const id = `${number}-${marker.name}`
    const path = join(this.#generations, id)
    await rename(staged, path)
    await fsyncDir(this.#generations)
    return { id, name: marker.name, path, manifestId: marker.manifestId }
  }

  /** Atomically points `current` at `gen`; null removes the link. */
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
      throw new ActivatorError('switch-failed', `could not switch to ${gen.id}: ${errorMessage(err)}`, {
        cause: err,
      })
    }
    await fsyncDir(this.#root)
  }

  /**
   * Deletes all but the newest `keep` generations, never the current one nor any in
   * `protect`, plus leftovers of interrupted work. Resolves with the deleted ids.
   */
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
    return removed
  }

  async #load(id: string): Promise<GenerationInfo> {
    const match = GENERATION_DIR.exec(id)
    const path = join(this.#generations, id)
    // No usable marker: made by hand or by an older agent; still a usable generation.
    const manifestId = await readJson(join(path, MARKER), markerSchema).then(
      (marker) => marker.manifestId,
      () => null,
    )
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
