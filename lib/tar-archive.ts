/**
 * Inspecting a tar or gzip-compressed tar archive without unpacking it: its
 * format from the magic bytes, and its members listed with the system's tar and
 * checked for paths that would escape the directory it is unpacked into. The
 * agent runs this before unpacking a generation; the admin runs it before
 * signing and uploading one, so a payload the machines would refuse never ships.
 *
 * @example
 *
 * ```ts
 * const format = await inspectTarArchive(path) // throws TarArchiveError not-tar / unlistable / unsafe
 * ```
 */
import { execFile } from 'node:child_process'
import { open } from 'node:fs/promises'
import { basename } from 'node:path'
import { CodedError } from './errors.ts'

export type TarArchiveFormat = 'tar' | 'tar.gz'

/**
 * Why an archive was refused: `not-tar` neither tar nor gzip by its first
 * bytes, `unlistable` tar could not list it (truncated, corrupt, or gzip of
 * something else), `unsafe` members that would escape or device nodes.
 */
export class TarArchiveError extends CodedError<'not-tar' | 'unlistable' | 'unsafe'> {
  override name = 'TarArchiveError'
}

/** Checks that `path` is a tar archive that lists cleanly and is safe to unpack; resolves with its format. */
export async function inspectTarArchive(path: string): Promise<TarArchiveFormat> {
  const format = await detectTarFormat(path)
  await checkTarMembers(path, format)
  return format
}

/** The tar flag for `format`'s compression. */
export const tarGzipFlag = (format: TarArchiveFormat): string[] => (format === 'tar.gz' ? ['-z'] : [])

/** Tells gzip from plain tar by their magic bytes; anything else is refused. */
async function detectTarFormat(path: string): Promise<TarArchiveFormat> {
  const handle = await open(path, 'r')
  const head = Buffer.alloc(512)
  let length: number
  try {
    length = (await handle.read(head, 0, 512, 0)).bytesRead
  } finally {
    await handle.close()
  }
  if (length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz'
  if (length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar'
  throw new TarArchiveError('not-tar', `${basename(path)} is neither a tar nor a gzip-compressed tar archive`)
}

const TAR_MAX_BUFFER = 64 * 1024 * 1024

/** Runs the system's tar; a failure rejects with tar's own complaint. */
export function runTar(args: readonly string[]): Promise<string> {
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
 * Refuses members that would land outside the unpack directory and device
 * nodes. GNU tar strips such paths by itself too; this check turns a silently
 * altered tree into a clear refusal.
 */
async function checkTarMembers(path: string, format: TarArchiveFormat): Promise<void> {
  const z = tarGzipFlag(format)
  const lines = (text: string) => text.split('\n').filter((l) => l.length > 0)
  const list = async (args: string[]) => {
    try {
      return lines(await runTar(args))
    } catch (err) {
      throw new TarArchiveError(
        'unlistable',
        `${basename(path)} is not a readable tar archive: ${(err as Error).message}`,
        {
          cause: err,
        },
      )
    }
  }
  const names = await list(['-t', ...z, '-f', path])
  const verbose = await list(['-t', '-v', ...z, '-f', path])
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
    throw new TarArchiveError(
      'unsafe',
      `refusing to unpack ${basename(path)}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` and ${problems.length - 5} more` : ''}`,
    )
  }
}
