/**
 * The archives a `profile` generation is unpacked from: tar or gzip-compressed
 * tar, checked for members that would escape the generation directory before
 * anything is written (lib/tar-archive.ts, which the admin also runs before
 * shipping one), then unpacked with the system's tar.
 *
 * @example
 *
 * ```ts
 * const format = await inspectArchive(artifact)   // throws ActivatorError bad-archive / unsafe-archive
 * await extractArchive(artifact, format, stagingDir)
 * ```
 */
import {
  inspectTarArchive,
  runTar,
  TarArchiveError,
  type TarArchiveFormat,
  tarGzipFlag,
} from '../lib/index.ts'
import { ActivatorError } from './activator.ts'

export type ArchiveFormat = TarArchiveFormat

/** Checks that `path` is a tar archive that is safe to unpack; resolves with its format. */
export async function inspectArchive(path: string): Promise<ArchiveFormat> {
  try {
    return await inspectTarArchive(path)
  } catch (err) {
    if (!(err instanceof TarArchiveError)) throw err
    if (err.code === 'not-tar')
      throw new ActivatorError('bad-archive', `${err.message}; the profile activator needs one of those`)
    if (err.code === 'unsafe') throw new ActivatorError('unsafe-archive', err.message)
    // tar could not list it: the update fails with tar's own complaint, as before
    throw err.cause instanceof Error ? err.cause : err
  }
}

/** Unpacks an archive {@link inspectArchive} accepted into `dir`, owned by the agent's user. */
export async function extractArchive(path: string, format: ArchiveFormat, dir: string): Promise<void> {
  await runTar(['-x', ...tarGzipFlag(format), '-f', path, '-C', dir, '--no-same-owner'])
}
