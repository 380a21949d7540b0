/**
 * Content-addressed blob store: `<dir>/<sha256>` holds verified blobs; uploads
 * land in `<dir>/partial/<sha256>` and only move into place after their hash and
 * size check out, so a reader never sees a partial or wrong blob. Partial files
 * are kept across restarts so an interrupted upload resumes where it stopped.
 */
import { createReadStream } from 'node:fs'
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { CodedError, fsyncDir, sha256File } from '../lib/index.ts'

export class BlobError extends CodedError<'not-found' | 'hash-mismatch' | 'size-mismatch' | 'too-large'> {
  override name = 'BlobError'
}

const SHA256_HEX = /^[0-9a-f]{64}$/

export class BlobStore {
  readonly dir: string
  readonly maxBlobBytes: number

  constructor(dir: string, maxBlobBytes = 8 * 1024 ** 3) {
    this.dir = dir
    this.maxBlobBytes = maxBlobBytes
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'partial'), { recursive: true, mode: 0o700 })
  }

  path(sha256: string): string {
    if (!SHA256_HEX.test(sha256)) throw new TypeError(`not a sha256: ${sha256.slice(0, 80)}`)
    return join(this.dir, sha256)
  }

  /** Size of a complete blob, or undefined. */
  async size(sha256: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(sha256))).size
    } catch {
      return undefined
    }
  }

  /** Bytes already received for an upload in progress (0 if none). */
  async partialSize(sha256: string): Promise<number> {
    this.path(sha256)
    try {
      return (await stat(join(this.dir, 'partial', sha256))).size
    } catch {
      return 0
    }
  }

  /**
   * Appends chunks to the partial file starting at `offset` (which must equal the
   * partial size) and, once `size` bytes are there, verifies and publishes it.
   */
  async receive(
    sha256: string,
    size: number,
    offset: number,
    chunks: AsyncIterable<Uint8Array>,
  ): Promise<'complete' | 'partial'> {
    if (size > this.maxBlobBytes)
      throw new BlobError('too-large', `blob of ${size} bytes exceeds the ${this.maxBlobBytes}-byte limit`)
    const partial = join(this.dir, 'partial', sha256)
    const have = await this.partialSize(sha256)
    if (offset !== have)
      throw new BlobError('size-mismatch', `upload resumes at ${offset} but ${have} bytes are stored`)
    const handle = await open(partial, 'a', 0o600)
    let written = have
    try {
      for await (const chunk of chunks) {
        if (written + chunk.byteLength > size) {
          throw new BlobError('size-mismatch', `upload is longer than the announced ${size} bytes`)
        }
        await handle.write(chunk)
        written += chunk.byteLength
      }
      await handle.sync()
    } finally {
      await handle.close()
    }
    if (written < size) return 'partial'
    const actual = await sha256File(partial)
    if (actual !== sha256) {
      await unlink(partial).catch(() => {})
      throw new BlobError(
        'hash-mismatch',
        `uploaded bytes hash to ${actual}, not ${sha256}; the upload was discarded`,
      )
    }
    await rename(partial, this.path(sha256))
    await fsyncDir(this.dir)
    return 'complete'
  }

  /** Deletes a complete blob; false when there was none. A download already reading it finishes. */
  async remove(sha256: string): Promise<boolean> {
    try {
      await unlink(this.path(sha256))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw err
    }
    await fsyncDir(this.dir)
    return true
  }

  /** Streams a complete blob from `offset`. */
  read(sha256: string, offset: number, chunkBytes = 256 * 1024): AsyncIterable<Uint8Array> {
    return createReadStream(this.path(sha256), { start: offset, highWaterMark: chunkBytes })
  }
}
