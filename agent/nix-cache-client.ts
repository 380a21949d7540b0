/**
 * The coordinator's Nix binary cache as the NixOS activator sees it: the
 * narinfos of a whole closure in one round trip over `/fleetmesh/nix/1`, and
 * NARs as ordinary blobs named by the SHA-256 of their bytes, downloaded (and
 * resumed) with the coordinator blob fetcher.
 *
 * The coordinator is trusted for availability only: every frame is checked
 * here for shape (a bad one fails with a {@link NixCacheError} naming what was
 * wrong), and the activator checks every narinfo's signature itself.
 *
 * @example
 *
 * ```ts
 * const cache = meshNixCache(host, coordinatorPeerId)
 * const { narinfos, missing } = await cache.closure('/nix/store/…-nixos-system-web-1', signal)
 * await cache.fetchNar(sha256Hex, narSize, '/var/lib/fleetmesh/nix/nars/….nar.part', (n) => log(n), signal)
 * ```
 */
import { backoffDelay, CodedError, errorMessage, sleep } from '../lib/index.ts'
import { type FleetHost, openStream } from '../net/index.ts'
import {
  decodeMessage,
  encodeMessage,
  FramedStream,
  MAX_CLOSURE_PATHS,
  MAX_NIX_FRAME_BYTES,
  type NarInfo,
  NarInfoError,
  type NixClosureFrame,
  nixClosureFrameSchema,
  nixClosureRequestSchema,
  PROTOCOLS,
  parseNarInfo,
  STORE_DIR,
} from '../protocol/index.ts'
import {
  type CoordinatorFetcherInit,
  type CoordinatorRef,
  coordinatorBlobFetcher,
  peerOf,
} from './blob-fetcher.ts'
import type { FileDigest } from './file-digest.ts'

/** What the cache holds of one closure. */
export interface NixClosure {
  /** One per path the cache holds, as the cache sent them (signatures unchecked). */
  narinfos: NarInfo[]
  /** Closure paths the cache does not hold. */
  missing: string[]
}

/** Where the NixOS activator gets narinfos and NARs: the coordinator over the mesh, or a stand-in in tests. */
export interface NixCacheSource {
  closure(storePath: string, signal: AbortSignal): Promise<NixClosure>
  /**
   * Downloads the NAR whose uncompressed bytes have SHA-256 `sha256` (hex) into
   * `dest`, appending to the bytes already there, never writing more than `size`.
   * The caller verifies the hash; a source that feeds `digest` the bytes it
   * appends spares it reading the file back (as BlobFetcher.fetch does).
   */
  fetchNar(
    sha256: string,
    size: number,
    dest: string,
    onProgress: (done: number) => void,
    signal: AbortSignal,
    digest?: FileDigest,
  ): Promise<void>
}

export type NixCacheErrorCode =
  /** The coordinator sent something that is not a valid answer. */
  | 'bad-frame'
  /** The coordinator answered with an error. */
  | 'cache-error'
  /** No answer for too long. */
  | 'unreachable'

export class NixCacheError extends CodedError<NixCacheErrorCode> {
  override name = 'NixCacheError'
}

export interface MeshNixCacheInit extends CoordinatorFetcherInit {
  /** Give up on a closure frame after this long. Default 60 s. */
  frameTimeoutMs?: number
}

export function meshNixCache(
  host: FleetHost,
  coordinator: CoordinatorRef,
  init: MeshNixCacheInit = {},
): NixCacheSource {
  const blobs = coordinatorBlobFetcher(host, coordinator, init)
  const maxWaitMs = init.maxWaitMs ?? 3_600_000
  const backoff = { initialMs: init.initialBackoffMs ?? 250, maxMs: init.maxBackoffMs ?? 15_000 }
  const frameTimeoutMs = init.frameTimeoutMs ?? 60_000
  return {
    async closure(storePath, signal) {
      const started = Date.now()
      let lastError: unknown
      // A coordinator that is restarting is waited for: failing would burn the manifest.
      for (let attempt = 0; Date.now() - started <= maxWaitMs; attempt++) {
        signal.throwIfAborted()
        try {
          const stream = await openStream(host, peerOf(coordinator), PROTOCOLS.nix, { signal })
          const framed = new FramedStream(stream, { maxFrameBytes: MAX_NIX_FRAME_BYTES })
          try {
            await framed.send(encodeMessage(nixClosureRequestSchema, { t: 'closure', storePath }))
            return await readClosure(framed, storePath, { signal, timeoutMs: frameTimeoutMs })
          } catch (err) {
            // Whatever else the coordinator was going to send is of no use now.
            framed.abort(err instanceof Error ? err : new Error(String(err)))
            throw err
          } finally {
            if (framed.stream.status === 'open') await framed.close().catch(() => {})
          }
        } catch (err) {
          if (signal.aborted || err instanceof NixCacheError) throw err
          lastError = err
        }
        await sleep(backoffDelay(attempt, backoff), signal)
      }
      throw new NixCacheError(
        'unreachable',
        `no answer from the coordinator's Nix cache for ${Math.round(maxWaitMs / 1000)} s (${errorMessage(lastError)})`,
        { cause: lastError },
      )
    },
    fetchNar(sha256, size, dest, onProgress, signal, digest) {
      return blobs.fetch(sha256, size, [{ kind: 'coordinator' }], dest, onProgress, signal, digest)
    },
  }
}

/**
 * Reads narinfo frames up to `end` and checks the answer is a whole closure:
 * every frame decodes, every narinfo parses, no path comes twice, the count
 * matches, and every reference is either sent or listed missing.
 */
async function readClosure(
  framed: FramedStream,
  storePath: string,
  options: { signal: AbortSignal; timeoutMs: number },
): Promise<NixClosure> {
  const byPath = new Map<string, NarInfo>()
  for (let index = 0; ; index++) {
    const bytes = await framed.read(options)
    if (bytes === undefined) {
      throw new Error(
        `the coordinator closed the stream after ${index} frames, before the end of the closure`,
      )
    }
    let frame: NixClosureFrame
    try {
      frame = decodeMessage(nixClosureFrameSchema, bytes, `closure frame ${index}`, MAX_NIX_FRAME_BYTES)
    } catch (err) {
      throw new NixCacheError('bad-frame', errorMessage(err), { cause: err })
    }
    if (frame.t === 'error') {
      throw new NixCacheError(
        'cache-error',
        `the coordinator could not list the closure of ${storePath}: ${frame.error.code}: ${frame.error.message}`,
      )
    }
    if (frame.t === 'narinfo') {
      let info: NarInfo
      try {
        info = parseNarInfo(frame.narinfo)
      } catch (err) {
        if (!(err instanceof NarInfoError)) throw err
        throw new NixCacheError('bad-frame', `closure frame ${index}: ${err.message}`, { cause: err })
      }
      if (byPath.has(info.storePath))
        throw new NixCacheError('bad-frame', `closure frame ${index}: ${info.storePath} was sent twice`)
      if (byPath.size >= MAX_CLOSURE_PATHS)
        throw new NixCacheError('bad-frame', `the closure has more than ${MAX_CLOSURE_PATHS} paths`)
      byPath.set(info.storePath, info)
      continue
    }
    if (frame.paths !== byPath.size) {
      throw new NixCacheError(
        'bad-frame',
        `the closure's end frame counts ${frame.paths} narinfos, but ${byPath.size} came`,
      )
    }
    const missing = [...new Set(frame.missing)]
    const known = new Set([...byPath.keys(), ...missing])
    if (!known.has(storePath)) {
      throw new NixCacheError(
        'bad-frame',
        `the answer neither holds ${storePath} itself nor lists it as missing`,
      )
    }
    for (const info of byPath.values()) {
      for (const ref of info.references) {
        if (!known.has(`${STORE_DIR}/${ref}`)) {
          throw new NixCacheError(
            'bad-frame',
            `the narinfo of ${info.storePath} refers to ${STORE_DIR}/${ref}, which the answer neither holds nor lists as missing`,
          )
        }
      }
    }
    return { narinfos: [...byPath.values()], missing }
  }
}
