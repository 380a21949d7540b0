/**
 * `<root>/generations.json`: which manifest put each store path into the
 * system profile, and under what generation name. A Nix profile records only
 * store paths, yet status reports name generations as the manifest did
 * ("web-7"), also after a restart. Paths the agent did not install (a manual
 * `nixos-rebuild`) are named after their store path.
 */
import { basename, join } from 'node:path'
import { z } from 'zod'
import { ensureDir, readJsonIfExists, writeJsonAtomic } from '../lib/index.ts'
import type { GenerationInfo } from './activator.ts'

const MAX_NAME = 128

const fileSchema = z.strictObject({
  v: z.literal(1),
  paths: z.record(
    z.string().max(512),
    z.strictObject({ name: z.string().min(1).max(MAX_NAME), manifestId: z.string().max(64).nullable() }),
  ),
})
type NamesFile = z.infer<typeof fileSchema>

/** The name of a generation nobody named: its store path without the hash ("nixos-system-web-23.11"). */
export function storePathName(path: string): string {
  return basename(path).slice(33, 33 + MAX_NAME) || basename(path).slice(0, MAX_NAME)
}

export class GenerationNames {
  readonly #dir: string
  readonly #path: string

  constructor(dir: string) {
    this.#dir = dir
    this.#path = join(dir, 'generations.json')
  }

  /** The generation for a store path, named as the manifest that installed it named it. */
  async info(path: string): Promise<GenerationInfo> {
    return infoOf(path, (await this.#read()).paths[path])
  }

  /** `info` for many paths with one read. */
  async infos(paths: readonly string[]): Promise<GenerationInfo[]> {
    const file = await this.#read()
    return paths.map((p) => infoOf(p, file.paths[p]))
  }

  async remember(path: string, name: string, manifestId: string | null): Promise<void> {
    const file = await this.#read()
    const known = file.paths[path]
    if (known?.name === name && known.manifestId === manifestId) return
    file.paths[path] = { name, manifestId }
    await this.#write(file)
  }

  /** Forgets every path but `keep`, so the file does not grow without bound. */
  async retain(keep: ReadonlySet<string>): Promise<void> {
    const file = await this.#read()
    const stale = Object.keys(file.paths).filter((p) => !keep.has(p))
    if (stale.length === 0) return
    for (const p of stale) delete file.paths[p]
    await this.#write(file)
  }

  async #read(): Promise<NamesFile> {
    // A damaged file costs only the names (reports fall back to store path names), never an update.
    const file = await readJsonIfExists(this.#path, fileSchema).catch(() => undefined)
    return file ?? { v: 1, paths: {} }
  }

  async #write(file: NamesFile): Promise<void> {
    await ensureDir(this.#dir)
    await writeJsonAtomic(this.#path, file)
  }
}

function infoOf(
  path: string,
  known: { name: string; manifestId: string | null } | undefined,
): GenerationInfo {
  return {
    id: basename(path),
    name: known?.name ?? storePathName(path),
    path,
    manifestId: known?.manifestId ?? null,
  }
}
