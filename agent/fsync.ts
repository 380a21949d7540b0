/**
 * Making files durable before a rename publishes them: without it a power cut
 * could leave a "complete" download or generation full of empty files.
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fsyncDir } from '../lib/index.ts'

/** Flushes a file's data to disk; lib's fsyncDir does exactly that for any path (open read-only, fsync). */
export const fsyncFile = (path: string): Promise<void> => fsyncDir(path)

/** Flushes every file and directory below `dir`, then `dir` itself. */
export async function fsyncTree(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) await fsyncTree(path)
    else if (entry.isFile()) await fsyncFile(path)
  }
  await fsyncDir(dir)
}
