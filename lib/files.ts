/**
 * Crash-safe file writes shared by every role: write a temporary file in the same
 * directory, fsync it, rename it over the target and fsync the directory, so a
 * power cut leaves either the old or the new content, never a torn file.
 * Temporaries carry a marker so a restart can recognise and remove leftovers.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

export const TEMP_MARKER = '.tmp-'

export function tempPathFor(path: string): string {
  return join(
    dirname(path),
    `${TEMP_MARKER}${basename(path)}-${process.pid}-${randomBytes(4).toString('hex')}`,
  )
}

export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_MARKER)
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = tempPathFor(path)
  const handle = await open(tmp, 'wx', mode)
  try {
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fsyncDir(dirname(path))
}

/**
 * Makes a rename, create or unlink in `dir` durable. Without it the file data may
 * be on disk while the directory entry pointing at it is not.
 */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export async function ensureDir(dir: string, mode = 0o700): Promise<void> {
  await mkdir(dir, { recursive: true, mode })
}

/** Removes temporaries left behind by writes that a crash interrupted. */
export async function removeStaleTemps(dir: string): Promise<void> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  const stale = names.filter(isTempName)
  for (const name of stale) await unlink(join(dir, name)).catch(() => {})
}

/** The size of the file at `path`, or undefined when there is none. */
export async function fileSize(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** Flushes a file's data to disk (fsyncDir's open-read-only-and-fsync works for any path). */
export const fsyncFile = (path: string): Promise<void> => fsyncDir(path)

/**
 * Flushes every file and directory below `dir`, then `dir` itself: before a
 * rename publishes a tree, so a power cut cannot leave it full of empty files.
 */
export async function fsyncTree(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) await fsyncTree(path)
    else if (entry.isFile()) await fsyncFile(path)
  }
  await fsyncDir(dir)
}
