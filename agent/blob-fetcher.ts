/**
 * Downloading content-addressed blobs, the payloads manifests point at: the
 * {@link BlobFetcher} contract activators consume, and one fetcher per source
 * kind. Every fetcher resumes from the bytes already in `dest`, so an update cut
 * off by a restart or a lost connection does not start over.
 *
 * - `coordinator` sources come over `/fleetmesh/blob/1` (the coordinator serves
 *   from any offset). A coordinator that is restarting or unreachable is waited
 *   for with backoff, because failing would burn the manifest: an attempted
 *   manifest is not retried. Only definitive answers (no such blob, wrong size)
 *   fail at once; a coordinator unreachable for `maxWaitMs` without progress fails too.
 * - `http` sources are fetched with fetch(), resuming with a Range request.
 *
 * @example
 *
 * ```ts
 * const fetcher = routeBlobFetcher({ coordinator: coordinatorBlobFetcher(host, coordinator), http: httpBlobFetcher() })
 * await fetcher.fetch(sha256, size, manifest.payload.sources, '/var/lib/x/blob.part', (done) => log(done), signal)
 * ```
 */
import { open } from 'node:fs/promises'
import type { PeerId } from '@libp2p/interface'
import { backoffDelay, errorMessage, fileSize, sleep } from '../lib/index.ts'
import { type FleetHost, openStream } from '../net/index.ts'
import {
  BLOB_CHUNK_BYTES,
  type BlobSource,
  blobRequestSchema,
  blobResponseSchema,
  decodeMessage,
  encodeMessage,
  FramedStream,
  PROTOCOLS,
} from '../protocol/index.ts'
import { ActivatorError } from './activator.ts'
import type { FileDigest } from './file-digest.ts'

// ---------------------------------------------------------------- the contract

/**
 * Downloads one content-addressed blob.
 *
 * Contract: write to `dest`, appending to the bytes already there (their count is
 * the file's size, so an interrupted download resumes), report the total byte
 * count present via onProgress, and never write more than `size` bytes. The caller
 * verifies size and hash afterwards; when it passes a `digest` of `dest`, the
 * fetcher feeds it every chunk it appends (and seeks it wherever it writes from),
 * so that the hash is ready without reading the file back.
 */
export interface BlobFetcher {
  fetch(
    sha256: string,
    size: number,
    sources: readonly BlobSource[],
    dest: string,
    onProgress: (done: number) => void,
    signal: AbortSignal,
    digest?: FileDigest,
  ): Promise<void>
}

/** Tries the sources in manifest order, each with the fetcher for its kind. */
export function routeBlobFetcher(routes: Partial<Record<BlobSource['kind'], BlobFetcher>>): BlobFetcher {
  return {
    async fetch(sha256, size, sources, dest, onProgress, signal, digest) {
      const problems: string[] = []
      for (const source of sources) {
        const fetcher = routes[source.kind]
        if (fetcher === undefined) {
          problems.push(`${source.kind}: no fetcher configured`)
          continue
        }
        try {
          await fetcher.fetch(sha256, size, [source], dest, onProgress, signal, digest)
          return
        } catch (err) {
          if (signal.aborted) throw err
          problems.push(`${describeSource(source)}: ${errorMessage(err)}`)
        }
      }
      throw new ActivatorError(
        'download-failed',
        `could not download blob ${sha256} from any of its ${sources.length} sources (${problems.join('; ')})`,
      )
    },
  }
}

const describeSource = (s: BlobSource) => (s.kind === 'http' ? s.url : s.kind)

/**
 * Writes a download's chunks to `dest` from byte `offset` on (truncating it when
 * starting over), refusing to grow it past `size`, and hashing them into `digest`.
 * Resolves with the byte count present.
 *
 * Nothing is fsync'd here: a download is only used once its hash has been checked,
 * and whoever keeps it makes it durable then (downloadArtifact before renaming
 * the blob into place). A power loss can cost a partial file its unsynced tail;
 * the hash check catches that.
 */
export async function writeChunks(
  dest: string,
  offset: number,
  size: number,
  chunks: AsyncIterable<Uint8Array>,
  onProgress: (done: number) => void,
  overflow: () => Error,
  digest: FileDigest | undefined,
): Promise<number> {
  const handle = await open(dest, offset === 0 ? 'w' : 'a', 0o600)
  let done = offset
  try {
    await digest?.seek(offset)
    for await (const chunk of chunks) {
      if (done + chunk.byteLength > size) throw overflow()
      await handle.write(chunk)
      digest?.update(chunk)
      done += chunk.byteLength
      onProgress(done)
    }
  } finally {
    await handle.close()
  }
  return done
}

// ---------------------------------------------------------------- coordinator sources

export interface CoordinatorFetcherInit {
  /** Give up after this long without receiving a byte. Default 1 h. */
  maxWaitMs?: number
  initialBackoffMs?: number
  maxBackoffMs?: number
}

/** The coordinator to ask, or, for an agent that fails over between several, a function naming the current one. */
export type CoordinatorRef = PeerId | (() => PeerId)

/** The coordinator `ref` names now (the one the agent is on, when it follows failover). */
export function peerOf(ref: CoordinatorRef): PeerId {
  return typeof ref === 'function' ? ref() : ref
}

export function coordinatorBlobFetcher(
  host: FleetHost,
  coordinator: CoordinatorRef,
  init: CoordinatorFetcherInit = {},
): BlobFetcher {
  const maxWaitMs = init.maxWaitMs ?? 3_600_000
  const backoff = { initialMs: init.initialBackoffMs ?? 250, maxMs: init.maxBackoffMs ?? 15_000 }
  return {
    async fetch(sha256, size, _sources, dest, onProgress, signal, digest) {
      let lastError: unknown
      let lastProgressAt = Date.now()
      for (let attempt = 0; ; attempt++) {
        signal.throwIfAborted()
        const before = (await fileSize(dest)) ?? 0
        if (before >= size) return
        try {
          await fetchFromCoordinator(
            host,
            peerOf(coordinator),
            { sha256, size, offset: before, dest, digest },
            onProgress,
            signal,
          )
          return
        } catch (err) {
          if (signal.aborted || err instanceof ActivatorError || isLocalWriteError(err)) throw err
          lastError = err
        }
        if (((await fileSize(dest)) ?? 0) > before) {
          lastProgressAt = Date.now()
          attempt = 0
        }
        if (Date.now() - lastProgressAt > maxWaitMs) break
        await sleep(backoffDelay(attempt, backoff), signal)
      }
      throw new ActivatorError(
        'download-failed',
        `blob ${sha256}: no progress from the coordinator for ${Math.round(maxWaitMs / 1000)} s (${errorMessage(lastError)})`,
        { cause: lastError },
      )
    },
  }
}

/** Errors of the local disk (full, read-only, no permission): waiting for the coordinator cannot fix them. */
const LOCAL_WRITE_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EROFS', 'EACCES', 'EPERM'])

function isLocalWriteError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return typeof code === 'string' && LOCAL_WRITE_ERRORS.has(code)
}

/** One attempt: the blob from byte `offset` on, appended to `dest`. */
interface BlobRange {
  sha256: string
  size: number
  offset: number
  dest: string
  digest: FileDigest | undefined
}

async function fetchFromCoordinator(
  host: FleetHost,
  coordinator: PeerId,
  { sha256, size, offset, dest, digest }: BlobRange,
  onProgress: (done: number) => void,
  signal: AbortSignal,
): Promise<void> {
  const stream = await openStream(host, coordinator, PROTOCOLS.blob, { signal })
  const fs = new FramedStream(stream, { maxFrameBytes: BLOB_CHUNK_BYTES + 1024 })
  try {
    await fs.send(encodeMessage(blobRequestSchema, { t: 'get', sha256, offset }))
    const response = decodeMessage(
      blobResponseSchema,
      await fs.readOne({ signal, timeoutMs: 30_000 }),
      'blob response',
      4096,
    )
    if (!response.ok)
      throw new ActivatorError(
        'download-failed',
        `coordinator: ${response.error.code}: ${response.error.message}`,
      )
    if (response.size !== size) {
      throw new ActivatorError(
        'artifact-mismatch',
        `coordinator has ${response.size} bytes for ${sha256}, the manifest says ${size}`,
      )
    }
    // Read up to `size` bytes; the stream need not end right after them.
    const frames = async function* () {
      for (let got = offset; got < size; ) {
        const chunk = await fs.read({ signal, timeoutMs: 60_000 })
        if (chunk === undefined) return
        got += chunk.byteLength
        yield chunk
      }
    }
    const done = await writeChunks(
      dest,
      offset,
      size,
      frames(),
      onProgress,
      () => new ActivatorError('artifact-mismatch', `coordinator sent more than ${size} bytes`),
      digest,
    )
    if (done < size) throw new Error(`stream ended at ${done} of ${size} bytes`)
  } finally {
    if (fs.stream.status === 'open') await fs.close().catch(() => {})
  }
}

// ---------------------------------------------------------------- http sources

export interface HttpBlobFetcherInit {
  /** Give up on a source that sends nothing for this long. Default 60 s. */
  idleTimeoutMs?: number
}

class HttpFetchError extends Error {
  override name = 'HttpFetchError'
}

/** Fetches `http` sources with fetch(), resuming with a Range request. */
export function httpBlobFetcher(init: HttpBlobFetcherInit = {}): BlobFetcher {
  const idleTimeoutMs = init.idleTimeoutMs ?? 60_000
  return {
    async fetch(sha256, size, sources, dest, onProgress, signal, digest) {
      const urls = sources.flatMap((s) => (s.kind === 'http' ? [s.url] : []))
      if (urls.length === 0) {
        throw new ActivatorError('download-failed', `blob ${sha256} has no http source`)
      }
      const problems: string[] = []
      for (const url of urls) {
        try {
          await fetchHttp(url, size, dest, onProgress, signal, idleTimeoutMs, digest)
          return
        } catch (err) {
          if (signal.aborted) throw err
          problems.push(`${url}: ${errorMessage(err)}`)
        }
      }
      throw new ActivatorError(
        'download-failed',
        `could not download blob ${sha256} over HTTP (${problems.join('; ')})`,
      )
    },
  }
}

async function fetchHttp(
  url: string,
  size: number,
  dest: string,
  onProgress: (done: number) => void,
  signal: AbortSignal,
  idleTimeoutMs: number,
  digest: FileDigest | undefined,
): Promise<void> {
  let offset = (await fileSize(dest)) ?? 0
  if (offset > size) offset = 0
  if (offset === size) {
    onProgress(size)
    return
  }
  const idle = new AbortController()
  let idleTimer = setTimeout(() => idle.abort(), idleTimeoutMs)
  const poke = () => {
    clearTimeout(idleTimer)
    idleTimer = setTimeout(() => idle.abort(), idleTimeoutMs)
  }
  const combined = AbortSignal.any([signal, idle.signal])
  try {
    const response = await fetch(url, {
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal: combined,
      redirect: 'follow',
    })
    if (response.status === 206) {
      const start = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')?.[1]
      if (start === undefined || Number(start) !== offset) {
        await response.body?.cancel()
        throw new HttpFetchError(`server answered the range request from ${offset} with "${start}"`)
      }
    } else if (response.status === 200) {
      // The server ignored the Range header and is sending the whole blob.
      offset = 0
    } else {
      await response.body?.cancel()
      throw new HttpFetchError(`HTTP ${response.status} ${response.statusText}`)
    }
    if (response.body === null) throw new HttpFetchError('response has no body')
    onProgress(offset)
    const done = await writeChunks(
      dest,
      offset,
      size,
      response.body,
      (n) => {
        poke()
        onProgress(n)
      },
      () => new HttpFetchError(`server sent more than the expected ${size} bytes`),
      digest,
    )
    if (done !== size) throw new HttpFetchError(`connection ended after ${done} of ${size} bytes`)
  } catch (err) {
    if (idle.signal.aborted && !signal.aborted) {
      throw new HttpFetchError(`no data for ${idleTimeoutMs} ms`, { cause: err })
    }
    throw err
  } finally {
    clearTimeout(idleTimer)
  }
}
