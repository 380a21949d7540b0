/**
 * The archives a `profile` generation is unpacked from: tar or gzip-compressed
 * tar, checked for members that would escape the generation directory before
 * anything is written, then unpacked with the system's tar.
 *
 * @example
 *
 * ```ts
 * const format = await inspectArchive(artifact)   // throws ActivatorError bad-archive / unsafe-archive
 * await extractArchive(artifact, format, stagingDir)
 * ```
 */
import { execFile } from 'node:child_process'
import { open } from 'node:fs/promises'
import { basename } from 'node:path'
import { ActivatorError } from './activator.ts'

export type ArchiveFormat = 'tar' | 'tar.gz'

/** Checks that `path` is a tar archive that is safe to unpack; resolves with its format. */
export async function inspectArchive(path: string): Promise<ArchiveFormat> {
  const format = await detectFormat(path)
  await checkMembers(path, format)
  return format
}

/** Unpacks an archive {@link inspectArchive} accepted into `dir`, owned by the agent's user. */
export async function extractArchive(path: string, format: ArchiveFormat, dir: string): Promise<void> {
  await tar(['-x', ...gzipFlag(format), '-f', path, '-C', dir, '--no-same-owner'])
}

const gzipFlag = (format: ArchiveFormat): string[] => (format === 'tar.gz' ? ['-z'] : [])

/** Tells gzip from plain tar by their magic bytes; anything else is refused. */
async function detectFormat(path: string): Promise<ArchiveFormat> {
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
async function checkMembers(path: string, format: ArchiveFormat): Promise<void> {
  const z = gzipFlag(format)
  const lines = (text: string) => text.split('\n').filter((l) => l.length > 0)
  const names = lines(await tar(['-t', ...z, '-f', path]))
  const verbose = lines(await tar(['-t', '-v', ...z, '-f', path]))
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
