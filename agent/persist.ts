import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { z } from 'zod'
import { describeIssues } from '../keys/schema.ts'

export type PersistErrorCode = 'missing' | 'unreadable' | 'corrupt' | 'invalid'

export class PersistError extends Error {
  override name = 'PersistError'
  readonly code: PersistErrorCode
  readonly path: string
  constructor(code: PersistErrorCode, path: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.path = path
  }
}

import { isTempName, writeFileAtomic } from '../keys/files.ts'

export { fsyncDir, isTempName, TEMP_MARKER, tempPathFor, writeFileAtomic } from '../keys/files.ts'

export async function ensureDir(dir: string, mode = 0o700): Promise<void> {
  await mkdir(dir, { recursive: true, mode })
}

export async function writeJsonAtomic(path: string, value: unknown, mode = 0o600): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, mode)
}

/** Reads and validates a JSON file; every failure names the file and what is wrong with it. */
export async function readJson<S extends z.ZodType>(path: string, schema: S): Promise<z.output<S>> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PersistError('missing', path, `${path} does not exist`, { cause: err })
    }
    throw new PersistError('unreadable', path, `cannot read ${path}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new PersistError(
      'corrupt',
      path,
      `${path} is not valid JSON (${(err as Error).message}); it was not written by this agent or the disk is damaged — move it aside to start from a clean state`,
      { cause: err },
    )
  }
  const parsed = schema.safeParse(value)
  if (!parsed.success) {
    throw new PersistError(
      'invalid',
      path,
      `${path} does not have the expected contents: ${describeIssues(parsed.error)}`,
    )
  }
  return parsed.data
}

/** Like readJson, but a missing file yields undefined (first start). */
export async function readJsonIfExists<S extends z.ZodType>(
  path: string,
  schema: S,
): Promise<z.output<S> | undefined> {
  try {
    return await readJson(path, schema)
  } catch (err) {
    if (err instanceof PersistError && err.code === 'missing') return undefined
    throw err
  }
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

export async function fileSize(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/**
 * Runs async sections one at a time, in call order. State files are read-modify-write,
 * so two overlapping sections would lose one of the writes.
 */
export function serialiser(): <T>(fn: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve()
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn)
    tail = run.catch(() => {})
    return run
  }
}

export const toBase64 = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')

export const fromBase64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'))
