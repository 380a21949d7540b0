/**
 * JSON files a program or a person wrote: read, parsed and validated in one
 * step, with an error that names the file and the field that is wrong, and a
 * crash-safe write. Every state and configuration file in fleetmesh goes
 * through here.
 */
import { readFile } from 'node:fs/promises'
import type { z } from 'zod'
import { CodedError } from './errors.ts'
import { writeFileAtomic } from './files.ts'

export type PersistErrorCode = 'missing' | 'unreadable' | 'corrupt' | 'invalid'

/** A JSON file could not be used: absent, unreadable, not JSON, or not the expected shape. */
export class PersistError extends CodedError<PersistErrorCode> {
  override name = 'PersistError'
  readonly path: string
  constructor(code: PersistErrorCode, path: string, message: string, options?: ErrorOptions) {
    super(code, message, options)
    this.path = path
  }
}

/** Formats a zod failure as "path: problem; path: problem" for error messages. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ')
}

/** Parses `text` (the contents of `path`) as JSON and validates it; errors name the file. */
export function parseJson<S extends z.ZodType>(text: string, path: string, schema: S): z.output<S> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new PersistError(
      'corrupt',
      path,
      `${path} is not valid JSON (${(err as Error).message}); it was not written by fleetmesh or the disk is damaged — fix it or move it aside`,
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
  return parseJson(text, path, schema)
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

export async function writeJsonAtomic(path: string, value: unknown, mode = 0o600): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, mode)
}
