/**
 * A short-lived binary cache on 127.0.0.1 through which the local Nix
 * substitutes a closure from the coordinator: Nix speaks HTTP to its caches,
 * the coordinator speaks libp2p, and this server sits in between for the
 * length of one `nix-store --realise`.
 *
 *   GET /nix-cache-info     StoreDir /nix/store, preferred over other caches
 *   GET /<hash>.narinfo     only narinfos that passed the agent's own signature
 *                           check, rewritten to `URL: nar/<sha256 hex>.nar`,
 *                           `Compression: none` (the signature covers neither)
 *   GET /nar/<hex>.nar      downloaded from the coordinator into
 *                           `<narDir>/<hex>.nar.part` (resumable), hashed as it
 *                           arrives, checked against its SHA-256, renamed to
 *                           `<hex>.nar`, then streamed with its length
 *
 * Nix asks for one NAR at a time, and every download pays a round trip over the
 * mesh before its first byte, so the NARs of the paths about to be substituted
 * (`prefetch`) are downloaded from the start, a few at a time. A request from
 * Nix waits for its NAR's download, or starts it at once when its turn has not
 * come yet.
 *
 * Anything else is 404, and writes (Nix tries PUT on caches it does not
 * recognise) are 405. A NAR that cannot be served — its bytes do not match its
 * hash, the disk is full, the coordinator does not have it — fails with 500,
 * and the reason is kept so the activator can say what went wrong rather than
 * Nix's vaguer "build of … failed".
 *
 * @example
 *
 * ```ts
 * const cache = await NixSubstituter.start({ narinfos, narDir, fetchNar: source.fetchNar })
 * try {
 *   await nix.realise(path, { substituters: [cache.url], … })
 * } finally {
 *   await cache.stop()
 * }
 * log(`fetched ${cache.stats.narsServed} paths`)
 * ```
 */
import { createReadStream } from 'node:fs'
import { rename, unlink } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { ensureDir, errorMessage, fileSize, sha256File } from '../lib/index.ts'
import {
  formatNarInfo,
  type NarInfo,
  nixSha256,
  STORE_DIR,
  sha256HexOfNixHash,
  storePathHash,
} from '../protocol/index.ts'
import { FileDigest } from './file-digest.ts'
import type { NixCacheSource } from './nix-cache-client.ts'

/**
 * Priority 0 is the lowest (most preferred) Nix gives any cache: one whose
 * nix-cache-info names no priority gets 0 too, and Nix keeps the order of the
 * `substituters` option between equals, where the loopback cache comes first.
 */
const CACHE_INFO = `StoreDir: ${STORE_DIR}\nWantMassQuery: 1\nPriority: 0\n`
const NARINFO_PATH = /^\/([0-9a-df-np-sv-z]{32})\.narinfo$/
const NAR_PATH = /^\/nar\/([0-9a-f]{64})\.nar$/
/** Local file-system errors: retrying the download cannot help with these. */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT', 'EFBIG'])
/**
 * NAR downloads the prefetch runs at once. Each pays a fixed round trip (stream
 * open, the coordinator's lookup: ~7 ms on loopback) before its first byte, and
 * a few in flight hide that behind each other's transfer. Past that, more
 * streams only split the same link and CPU (Noise and Yamux on both ends): on
 * the bench closure 2, 4 and 8 took 3.1, 2.9 and 2.6 s, within the noise of a
 * busy machine. The coordinator serves every agent of a rollout at once, so
 * each agent keeps to a small share.
 */
export const PREFETCH_CONCURRENCY = 4

export interface NixSubstituterInit {
  /** The narinfos Nix may see: only those whose signature the agent accepted. */
  narinfos: readonly NarInfo[]
  /** Where NARs are downloaded to and served from. */
  narDir: string
  fetchNar: NixCacheSource['fetchNar']
  /**
   * NARs to download from the start, in this order, without waiting for Nix to
   * ask: those of the paths it is about to substitute. Others are downloaded on request.
   */
  prefetch?: readonly NarInfo[]
  /** Prefetch downloads at a time. Default {@link PREFETCH_CONCURRENCY}. */
  prefetchConcurrency?: number
  /** Bytes present of every NAR downloaded so far, resumed bytes included. */
  onProgress?: (done: number) => void
  /** Called once, for the first NAR that cannot be served (prefetched or requested). */
  onFailure?: (failure: SubstituterFailure) => void
}

export interface SubstituterFailure {
  code: 'artifact-mismatch' | 'no-space' | 'download-failed'
  storePath: string
  message: string
}

export interface SubstituterStats {
  /** NARs whose every byte was handed to Nix's connection. */
  narsServed: number
  /** Their bytes. */
  bytesServed: number
}

/** One NAR the cache can serve. */
interface NarEntry {
  info: NarInfo
  sha256: string
}

export class NixSubstituter {
  readonly url: string
  readonly #server: Server
  readonly #init: NixSubstituterInit
  readonly #byHash = new Map<string, NarEntry>()
  readonly #bySha = new Map<string, NarEntry>()
  /** One download per NAR; a failed one stays failed, so Nix's retries are answered at once. */
  readonly #downloads = new Map<string, Promise<string>>()
  /** Bytes present per NAR, and their sum. */
  readonly #done = new Map<string, number>()
  #doneTotal = 0
  readonly #abort = new AbortController()
  #prefetch: Promise<void> = Promise.resolve()
  #failure: SubstituterFailure | null = null
  #stats: SubstituterStats = { narsServed: 0, bytesServed: 0 }

  private constructor(init: NixSubstituterInit, server: Server, url: string) {
    this.#init = init
    this.#server = server
    this.url = url
    for (const info of init.narinfos) {
      const entry = { info, sha256: sha256HexOfNixHash(info.narHash) }
      this.#byHash.set(storePathHash(info.storePath), entry)
      if (!this.#bySha.has(entry.sha256)) this.#bySha.set(entry.sha256, entry)
    }
  }

  static async start(init: NixSubstituterInit): Promise<NixSubstituter> {
    await ensureDir(init.narDir)
    const server = createServer()
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => resolve())
    })
    const { port } = server.address() as AddressInfo
    const cache = new NixSubstituter(init, server, `http://127.0.0.1:${port}`)
    server.on('request', (req, res) => void cache.#handle(req, res))
    cache.#startPrefetch(init.prefetch ?? [], init.prefetchConcurrency ?? PREFETCH_CONCURRENCY)
    return cache
  }

  /** The first NAR that could not be served, and why. */
  get failure(): SubstituterFailure | null {
    return this.#failure
  }

  get stats(): SubstituterStats {
    return { ...this.#stats }
  }

  /** Stops serving, cancels the downloads in flight and waits for them to stop. */
  async stop(): Promise<void> {
    this.#abort.abort(new Error('the loopback Nix cache was stopped'))
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    this.#server.closeAllConnections()
    await closed
    await this.#prefetch
    await Promise.allSettled(this.#downloads.values())
  }

  /** Deletes the verified NARs; partial downloads stay, to be resumed by the next attempt. */
  async removeDownloads(): Promise<void> {
    for (const sha256 of this.#bySha.keys()) {
      await unlink(join(this.#init.narDir, `${sha256}.nar`)).catch(() => {})
    }
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const method = req.method ?? 'GET'
      if (method !== 'GET' && method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('read-only cache\n')
        return
      }
      const path = (req.url ?? '/').split('?')[0] as string
      if (path === '/nix-cache-info') return text(res, method, CACHE_INFO)
      const narinfo = NARINFO_PATH.exec(path)
      if (narinfo !== null) {
        const entry = this.#byHash.get(narinfo[1] as string)
        if (entry === undefined) return notFound(res)
        return text(res, method, formatNarInfo(asServed(entry)))
      }
      const nar = NAR_PATH.exec(path)
      const entry = nar === null ? undefined : this.#bySha.get(nar[1] as string)
      if (entry === undefined) return notFound(res)
      const headers = { 'content-type': 'application/x-nix-nar', 'content-length': entry.info.narSize }
      if (method === 'HEAD') {
        res.writeHead(200, headers).end()
        return
      }
      let file: string
      try {
        file = await this.#download(entry)
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${errorMessage(err)}\n`)
        return
      }
      res.writeHead(200, headers)
      const stats = this.#stats
      const size = entry.info.narSize
      let handed = 0
      // Counted as the last bytes are handed to the socket, not when the pipeline
      // settles: Nix can read them, exit, and the activator stop this cache (closing
      // the connection) before this process's write callbacks have run.
      await pipeline(
        createReadStream(file),
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            handed += chunk.byteLength
            if (handed === size) {
              stats.narsServed += 1
              stats.bytesServed += size
            }
            yield chunk
          }
        },
        res,
      )
    } catch {
      // Nix hung up, or the server is stopping: nothing to answer any more.
      res.destroy()
    }
  }

  /** Runs the downloads of `infos` (each NAR once), `width` at a time, skipping those Nix started first. */
  #startPrefetch(infos: readonly NarInfo[], width: number): void {
    const queue = [...new Set(infos.map((i) => sha256HexOfNixHash(i.narHash)))].flatMap((sha256) => {
      const entry = this.#bySha.get(sha256)
      return entry === undefined ? [] : [entry]
    })
    const worker = async () => {
      for (let entry = queue.shift(); entry !== undefined; entry = queue.shift()) {
        if (this.#abort.signal.aborted) return
        if (this.#downloads.has(entry.sha256)) continue
        // A failure is recorded (and reported) by #download; the others still go on.
        await this.#download(entry).catch(() => {})
      }
    }
    const workers = Array.from({ length: Math.min(Math.max(1, width), queue.length) }, worker)
    this.#prefetch = Promise.all(workers).then(() => {})
  }

  #download(entry: NarEntry): Promise<string> {
    let download = this.#downloads.get(entry.sha256)
    if (download === undefined) {
      download = this.#fetch(entry).catch((err: unknown) => {
        const failure = describeFailure(entry, err)
        if (this.#failure === null && !this.#abort.signal.aborted) {
          this.#failure = failure
          this.#init.onFailure?.(failure)
        }
        throw new Error(failure.message, { cause: err })
      })
      this.#downloads.set(entry.sha256, download)
    }
    return download
  }

  /**
   * Downloads one NAR and checks its hash, computed as the bytes arrive. Nothing
   * is fsync'd: the bytes are checked against their hash before they are served,
   * and after a crash whatever did not reach the disk is downloaded again.
   */
  async #fetch(entry: NarEntry): Promise<string> {
    const { sha256, info } = entry
    const size = info.narSize
    const final = join(this.#init.narDir, `${sha256}.nar`)
    const part = `${final}.part`
    const progress = (done: number) => {
      this.#doneTotal += done - (this.#done.get(sha256) ?? 0)
      this.#done.set(sha256, done)
      this.#init.onProgress?.(this.#doneTotal)
    }
    if ((await fileSize(final)) === size && (await sha256File(final)) === sha256) {
      progress(size)
      return final
    }
    await unlink(final).catch(() => {})
    if (((await fileSize(part)) ?? 0) > size) await unlink(part)
    for (let fresh = false; ; fresh = true) {
      const resumedFrom = (await fileSize(part)) ?? 0
      const digest = new FileDigest(part)
      progress(resumedFrom)
      await this.#init.fetchNar(sha256, size, part, progress, this.#abort.signal, digest)
      const got = (await fileSize(part)) ?? 0
      if (got !== size) throw new Error(`the download stopped at ${got} of ${size} bytes`)
      const actual = await digest.digest()
      if (actual === sha256) break
      await unlink(part).catch(() => {})
      // A partial file from before a crash can end in bytes that never reached the disk:
      // only a mismatch of a download made here from the first byte shows tampering.
      if (resumedFrom === 0 || fresh) {
        throw new NarMismatchError(`its bytes have SHA-256 ${actual}, its signed narinfo says ${sha256}`)
      }
    }
    await rename(part, final)
    return final
  }
}

class NarMismatchError extends Error {
  override name = 'NarMismatchError'
}

/** The narinfo as this cache serves it: the NAR uncompressed under nar/<sha256 hex>.nar. */
function asServed({ info, sha256 }: NarEntry): NarInfo {
  const hash = nixSha256(sha256)
  return {
    ...info,
    url: `nar/${sha256}.nar`,
    compression: 'none',
    fileHash: hash,
    fileSize: info.narSize,
    narHash: hash,
  }
}

function describeFailure({ info }: NarEntry, err: unknown): SubstituterFailure {
  const storePath = info.storePath
  if (err instanceof NarMismatchError) {
    return {
      code: 'artifact-mismatch',
      storePath,
      message: `the NAR of ${storePath} does not match its hash: ${err.message}. The coordinator serves different bytes than were signed; discarded them`,
    }
  }
  const code = (err as NodeJS.ErrnoException).code
  if (code !== undefined && NO_SPACE.has(code)) {
    return {
      code: 'no-space',
      storePath,
      message: `no space left to download the NAR of ${storePath} (${info.narSize} bytes): ${errorMessage(err)}`,
    }
  }
  return {
    code: 'download-failed',
    storePath,
    message: `could not download the NAR of ${storePath}: ${errorMessage(err)}`,
  }
}

function text(res: ServerResponse, method: string, body: string): void {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
  res.end(method === 'HEAD' ? undefined : body)
}

function notFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'text/plain' }).end('not in this cache\n')
}
