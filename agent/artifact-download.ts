/**
 * A directory of verified downloads: `<dir>/<sha256>.part` while a blob is being
 * fetched (resumed from its size after an interruption), renamed to
 * `<dir>/<sha256>.blob` once its size and hash match the manifest. A `.blob` is
 * therefore always complete and verified, and a second fetch of it is free.
 *
 * @example
 *
 * ```ts
 * const path = await downloadArtifact({ dir, fetcher, attempts: 3 }, manifest.payload, (p) => log(p), signal)
 * ```
 */
import { rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { ensureDir, errorMessage, fileSize, fsyncDir, fsyncFile, sha256File, sleep } from '../lib/index.ts'
import type { BlobSource } from '../protocol/index.ts'
import { ActivatorError, type FetchProgress } from './activator.ts'
import type { BlobFetcher } from './blob-fetcher.ts'
import { FileDigest } from './file-digest.ts'

export interface ArtifactDownloadInit {
  /** Holds the .part and .blob files. */
  dir: string
  fetcher: BlobFetcher
  /** Download attempts (resuming each time) before giving up. */
  attempts: number
}

/** What to download: a content-addressed blob and where it can be had. */
export interface BlobRef {
  sha256: string
  size: number
  sources: readonly BlobSource[]
}

/** Downloads (or finds) the blob, verifies it and resolves with the path of the `.blob` file. */
export async function downloadArtifact(
  init: ArtifactDownloadInit,
  blob: BlobRef,
  onProgress: (progress: FetchProgress) => void,
  signal: AbortSignal,
): Promise<string> {
  const { sha256, size } = blob
  await ensureDir(init.dir)
  const final = join(init.dir, `${sha256}.blob`)
  const part = join(init.dir, `${sha256}.part`)

  if ((await fileSize(final)) !== undefined) {
    if ((await fileSize(final)) === size && (await sha256File(final)) === sha256) {
      onProgress({ done: size, total: size })
      return final
    }
    await unlink(final)
  }
  if (((await fileSize(part)) ?? 0) > size) await unlink(part)

  // Fed by the fetcher as it writes; what it did not see (a .part from before a restart) it reads once.
  const digest = new FileDigest(part)
  // A complete .part is what a crash between download and rename leaves behind.
  for (let attempt = 1; (await fileSize(part)) !== size; attempt++) {
    try {
      await init.fetcher.fetch(
        sha256,
        size,
        blob.sources,
        part,
        (done) => onProgress({ done, total: size }),
        signal,
        digest,
      )
      break
    } catch (err) {
      if (signal.aborted || attempt >= init.attempts) {
        if (signal.aborted || err instanceof ActivatorError) throw err
        throw new ActivatorError(
          'download-failed',
          `downloading ${sha256} failed after ${attempt} attempts: ${errorMessage(err)}`,
          { cause: err },
        )
      }
      await sleep(250 * attempt, signal)
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
  const actual = await digest.digest()
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
  await fsyncDir(init.dir)
  return final
}
