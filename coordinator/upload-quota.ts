/**
 * What blob uploads may cost the coordinator while they are pending: an upload
 * announces its size up front (up to the blob size limit), and the bytes of
 * every pending upload are reserved against a per-admin and a total cap before
 * a byte is accepted. An upload is pending while it runs (counted at its
 * announced size) and, once interrupted, while its partial file waits to be
 * resumed (`resumeGraceMs`, counted at the bytes received); after that the
 * partial file is deleted and its bytes are free again.
 */
import { CodedError } from '../lib/index.ts'

export interface UploadLimits {
  /** An upload that delivers no bytes for this long is aborted. */
  idleTimeoutMs: number
  /** Every upload may take this long, plus its remaining bytes at `minBytesPerSecond`. */
  baseDurationMs: number
  minBytesPerSecond: number
  /** Bytes announced by one admin key's pending uploads, at most. */
  perAdminBytes: number
  /** Bytes announced by all pending uploads together, at most. */
  totalBytes: number
  /** How long an interrupted upload's partial file is kept for the admin to resume it (0: deleted at once). */
  resumeGraceMs: number
}

const GiB = 1024 ** 3

export const DEFAULT_UPLOAD_LIMITS: UploadLimits = {
  idleTimeoutMs: 60_000,
  baseDurationMs: 60_000,
  // 512 kbit/s: an 8 GiB blob may take 36 h, and an interrupted one resumes on a fresh deadline
  minBytesPerSecond: 64 * 1024,
  perAdminBytes: 16 * GiB,
  totalBytes: 32 * GiB,
  resumeGraceMs: 10 * 60_000,
}

/** An upload refused because of what is already pending. */
export class UploadQuotaError extends CodedError<'quota-admin' | 'quota-total' | 'upload-busy'> {
  override name = 'UploadQuotaError'
}

interface Pending {
  /** The admin key that announced it; undefined for a partial file found at start-up. */
  owner: string | undefined
  bytes: number
  /** Set while a transfer runs: aborting it makes way for the same admin's retry. */
  running: { stop: AbortController; done: Promise<void> } | undefined
  expiry: NodeJS.Timeout | undefined
}

/** A running upload's reservation; exactly one of release() and keep() ends it. */
export interface UploadLease {
  /** Aborts when the same admin starts the same upload again: this transfer must stop. */
  readonly signal: AbortSignal
  /** The upload completed, or its bytes were deleted: its reservation ends. */
  release(): void
  /** The upload was interrupted: `bytes` (those received) stay reserved for `graceMs` for it to resume, then `discard` runs. */
  keep(bytes: number, graceMs: number, discard: () => void): void
}

export function formatBytes(n: number): string {
  for (const [unit, scale] of [
    ['GiB', GiB],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const)
    if (n >= scale) return `${(n / scale).toFixed(1)} ${unit}`
  return `${n} bytes`
}

export class UploadQuota {
  readonly limits: UploadLimits
  readonly #pending = new Map<string, Pending>()

  constructor(limits: UploadLimits) {
    this.limits = limits
  }

  /** Bytes reserved by pending uploads, in all and for one admin key. */
  reserved(owner?: string): { bytes: number; uploads: number } {
    let bytes = 0
    let uploads = 0
    for (const p of this.#pending.values()) {
      if (owner !== undefined && p.owner !== owner) continue
      bytes += p.bytes
      uploads++
    }
    return { bytes, uploads }
  }

  /**
   * Reserves `bytes` for `owner`'s upload of `sha256` until the lease is
   * released or kept. A transfer of the same blob still running for the same
   * admin (a retry after its connection died) is stopped first; another
   * admin's is refused.
   */
  async admit(owner: string, sha256: string, bytes: number): Promise<UploadLease> {
    const previous = this.#pending.get(sha256)
    if (previous?.running !== undefined) {
      if (previous.owner !== owner)
        throw new UploadQuotaError(
          'upload-busy',
          `blob ${sha256} is being uploaded by another admin right now; try again once that upload has finished`,
        )
      previous.running.stop.abort(new Error('superseded by a new upload of the same blob'))
      await previous.running.done
    }
    this.#forget(sha256)
    this.#check(owner, bytes)
    const stop = new AbortController()
    const done = Promise.withResolvers<void>()
    this.#pending.set(sha256, { owner, bytes, running: { stop, done: done.promise }, expiry: undefined })
    return {
      signal: stop.signal,
      release: () => {
        this.#forget(sha256)
        done.resolve()
      },
      keep: (kept, graceMs, discard) => {
        this.#forget(sha256)
        if (graceMs > 0) this.hold(sha256, owner, kept, graceMs, discard)
        else discard()
        done.resolve()
      },
    }
  }

  /** Reserves the bytes of an interrupted upload's partial file until `discard` runs after `graceMs`. */
  hold(sha256: string, owner: string | undefined, bytes: number, graceMs: number, discard: () => void): void {
    this.#forget(sha256)
    const expiry = setTimeout(() => {
      this.#pending.delete(sha256)
      discard()
    }, graceMs)
    expiry.unref()
    this.#pending.set(sha256, { owner, bytes, running: undefined, expiry })
  }

  /** Stops every expiry timer (the partial files stay for the next start). */
  close(): void {
    for (const p of this.#pending.values()) clearTimeout(p.expiry)
  }

  #forget(sha256: string): void {
    clearTimeout(this.#pending.get(sha256)?.expiry)
    this.#pending.delete(sha256)
  }

  #check(owner: string, bytes: number): void {
    const { perAdminBytes, totalBytes } = this.limits
    const mine = this.reserved(owner)
    if (mine.bytes + bytes > perAdminBytes)
      throw new UploadQuotaError(
        'quota-admin',
        `an upload of ${formatBytes(bytes)} would pass the per-admin cap on pending uploads of ` +
          `${formatBytes(perAdminBytes)}: this admin key has ${mine.uploads} upload(s) of ` +
          `${formatBytes(mine.bytes)} pending; let them finish (interrupted ones are dropped after ` +
          `${this.limits.resumeGraceMs / 1000} s) or ask the operator to raise --upload-quota-per-admin-mb`,
      )
    const all = this.reserved()
    if (all.bytes + bytes > totalBytes)
      throw new UploadQuotaError(
        'quota-total',
        `an upload of ${formatBytes(bytes)} would pass the coordinator's cap on pending uploads of ` +
          `${formatBytes(totalBytes)}: ${all.uploads} upload(s) of ${formatBytes(all.bytes)} are pending; ` +
          'try again later or ask the operator to raise --upload-quota-total-mb',
      )
  }
}
