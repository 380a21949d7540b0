/**
 * Content-addressed blob store: `<dir>/<sha256>` holds verified blobs; uploads
 * land in `<dir>/partial/<sha256>` and only move into place after their hash and
 * size check out, so a reader never sees a partial or wrong blob.
 *
 * An upload is bounded (upload-quota.ts): its announced size must fit the
 * pending-upload caps, it is aborted when no bytes come for a while or it runs
 * past a deadline set by its size, and its partial file is deleted when its
 * bytes are wrong, or `resumeGraceMs` after it was interrupted unless the admin
 * resumes it by then; partial files older than that are deleted at start-up.
 */
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { CodedError, fsyncDir, sha256File } from '../lib/index.ts'
import { DEFAULT_UPLOAD_LIMITS, type UploadLimits, UploadQuota, UploadQuotaError } from './upload-quota.ts'

export class BlobError extends CodedError<
  | 'not-found'
  | 'hash-mismatch'
  | 'size-mismatch'
  | 'too-large'
  | 'stalled'
  | 'too-slow'
  | 'superseded'
  | UploadQuotaError['code']
> {
  override name = 'BlobError'
}

/** Where an upload's bytes come from: the next chunk, or undefined once the sender is done. */
export type ChunkReader = (options: {
  signal: AbortSignal
  timeoutMs: number
}) => Promise<Uint8Array | undefined>

export interface BlobStoreOptions {
  maxBlobBytes?: number
  uploads?: Partial<UploadLimits>
}

const SHA256_HEX = /^[0-9a-f]{64}$/
/** Node timers fire at once when asked for more than this. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class BlobStore {
  readonly dir: string
  readonly maxBlobBytes: number
  readonly uploads: UploadQuota

  constructor(dir: string, options: BlobStoreOptions = {}) {
    this.dir = dir
    this.maxBlobBytes = options.maxBlobBytes ?? 8 * 1024 ** 3
    this.uploads = new UploadQuota({ ...DEFAULT_UPLOAD_LIMITS, ...options.uploads })
  }

  /**
   * Creates the directories. Partial files left by an earlier run stay (and count
   * against the total cap) for what is left of their resume grace, measured from
   * their last write; older ones, and anything else in `partial/`, are deleted.
   */
  async init(now = Date.now()): Promise<void> {
    const partial = join(this.dir, 'partial')
    await mkdir(partial, { recursive: true, mode: 0o700 })
    const grace = this.uploads.limits.resumeGraceMs
    for (const name of await readdir(partial)) {
      const info = await stat(join(partial, name)).catch(() => undefined)
      if (info === undefined) continue
      const left = grace - (now - info.mtimeMs)
      if (SHA256_HEX.test(name) && info.isFile() && left > 0)
        this.uploads.hold(name, undefined, info.size, Math.min(left, MAX_TIMER_MS), () => this.#expire(name))
      else await rm(join(partial, name), { recursive: true, force: true })
    }
  }

  /** Stops the partial files' expiry timers. */
  close(): void {
    this.uploads.close()
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

  /**
   * Receives an admin's upload: reserves its announced size against the caps
   * (or throws BlobError with the quota's code), tells the sender where to start
   * through `started`, then takes chunks from `read` until the blob is complete
   * or the sender closes. Every way it ends frees the reservation, deletes the
   * partial file or keeps it to be resumed.
   */
  async upload(
    owner: string,
    sha256: string,
    size: number,
    transfer: { started: (offset: number) => Promise<void>; read: ChunkReader },
  ): Promise<'complete' | 'partial'> {
    if (size > this.maxBlobBytes)
      throw new BlobError('too-large', `blob of ${size} bytes exceeds the ${this.maxBlobBytes}-byte limit`)
    this.path(sha256)
    const lease = await this.uploads.admit(owner, sha256, size).catch((err: unknown) => {
      throw err instanceof UploadQuotaError ? new BlobError(err.code, err.message) : err
    })
    const { resumeGraceMs } = this.uploads.limits
    // Interrupted: what arrived is kept (and counted) for the admin to resume within the grace;
    // without a grace, or with nothing received, it is deleted before the admin hears of it.
    const keep = async () => {
      const received = await this.partialSize(sha256)
      if (resumeGraceMs > 0 && received > 0) lease.keep(received, resumeGraceMs, () => this.#expire(sha256))
      else await this.#discard(sha256).finally(() => lease.release())
    }
    try {
      const offset = await this.partialSize(sha256)
      await transfer.started(offset)
      const limits = this.uploads.limits
      const deadlineMs = limits.baseDurationMs + ((size - offset) / limits.minBytesPerSecond) * 1000
      const deadline = AbortSignal.timeout(Math.min(Math.ceil(deadlineMs), MAX_TIMER_MS))
      const signal = AbortSignal.any([deadline, lease.signal])
      const chunks = async function* (): AsyncGenerator<Uint8Array> {
        while (true) {
          const chunk = await transfer
            .read({ signal, timeoutMs: limits.idleTimeoutMs })
            .catch((err: unknown) => {
              if (lease.signal.aborted)
                throw new BlobError(
                  'superseded',
                  `a newer upload of blob ${sha256} from the same admin took over`,
                )
              if (deadline.aborted)
                throw new BlobError(
                  'too-slow',
                  `upload of blob ${sha256} did not finish within ${Math.round(deadlineMs / 1000)} s ` +
                    `(it must average ${limits.minBytesPerSecond} bytes/s); run the command again to resume it`,
                )
              if ((err as Error).name === 'TimeoutError')
                throw new BlobError(
                  'stalled',
                  `upload of blob ${sha256} sent no data for ${limits.idleTimeoutMs / 1000} s and was aborted; ` +
                    'run the command again to resume it',
                )
              throw err
            })
          if (chunk === undefined) return
          yield chunk
        }
      }
      const outcome = await this.receive(sha256, size, offset, chunks())
      if (outcome === 'complete') lease.release()
      else await keep()
      return outcome
    } catch (err) {
      // Wrong bytes are worth nothing; anything else (a stall, a lost connection) may resume.
      if (err instanceof BlobError && (err.code === 'hash-mismatch' || err.code === 'size-mismatch')) {
        await this.#discard(sha256)
        lease.release()
      } else await keep()
      throw err
    }
  }

  /** A partial file's resume grace is over. */
  #expire(sha256: string): void {
    this.#discard(sha256).catch(() => {})
  }

  async #discard(sha256: string): Promise<void> {
    await unlink(join(this.dir, 'partial', sha256)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
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
