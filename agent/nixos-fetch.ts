/**
 * The nixos activator's fetch step: getting a system closure into the local
 * store without evaluating or building anything.
 *
 *   1. ask the coordinator for the narinfos of the whole closure
 *   2. plan: for every path missing here, a narinfo signed by a key the
 *      manifest trusts (checked here, also where Nix would take a path
 *      unsigned), or else the manifest's own HTTP substituters
 *   3. check the disk has room for the NARs and the unpacked paths
 *   4. let the local Nix substitute the missing paths through a loopback cache
 *      (nix-substituter.ts) that downloads their NARs from the coordinator
 *
 * @example
 *
 * ```ts
 * await fetchClosure({ cache, nix, narDir, pendingRoot, cacheHome, realiseTimeoutMs }, payload, onProgress, signal, log)
 * ```
 */
import { rm, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import { NixPublicKey } from '../keys/index.ts'
import { ensureDir, fileSize } from '../lib/index.ts'
import {
  checkNarInfoSignature,
  type NarInfo,
  type NixPayload,
  STORE_DIR,
  sha256HexOfNixHash,
} from '../protocol/index.ts'
import { ActivatorError, type FetchProgress } from './activator.ts'
import { NixCacheError, type NixCacheSource } from './nix-cache-client.ts'
import { type NixStore, NixStoreError } from './nix-store.ts'
import { NixSubstituter } from './nix-substituter.ts'
import { activatorError, MAX_QUOTED_OUTPUT, nixStep, tail } from './nixos-errors.ts'

const MiB = 1024 * 1024

/** A nix payload with the closure this machine installs picked out (its own, from a closure map). */
export type OwnNixPayload = Omit<NixPayload, 'storePath' | 'storePaths'> & { storePath: string }

export interface NixosFetchInit {
  /** The coordinator's cache, or a stand-in. */
  cache: NixCacheSource
  nix: NixStore
  /** NARs while they are downloaded. */
  narDir: string
  /** Keeps a fetched closure alive until the profile refers to it. */
  pendingRoot: string
  /** Nix's narinfo cache, emptied before every realisation. */
  cacheHome: string
  /** How long substituting a closure may take. */
  realiseTimeoutMs: number
}

/** What fetch found it has to do. */
interface FetchPlan {
  /** Every path of the closure. */
  closure: string[]
  /** Missing here and served from the coordinator, signatures checked. */
  served: NarInfo[]
  /**
   * Every narinfo whose signature checks out, the loopback cache's offer: should a
   * path valid a moment ago be collected before Nix gets to it, Nix fetches it too.
   */
  trusted: NarInfo[]
  /** Missing here and left to the manifest's HTTP substituters. */
  external: string[]
}

/** Makes `payload.storePath` and its closure valid in the local store, rooted at `pendingRoot`. */
export async function fetchClosure(
  init: NixosFetchInit,
  payload: OwnNixPayload,
  onProgress: (progress: FetchProgress) => void,
  signal: AbortSignal,
  log: (line: string) => void,
): Promise<void> {
  const top = payload.storePath
  await nixStep('nix-unavailable', () => init.nix.version())
  if ((await invalidPaths(init.nix, [top])).length === 0) {
    // Still rooted, so that a garbage collection before the switch cannot take it.
    await nixStep('download-failed', () => init.nix.addRoot(top, init.pendingRoot))
    log(`${top} is already in the local store; nothing to fetch`)
    onProgress({ done: 0, total: 0 })
    return
  }
  let closure: Awaited<ReturnType<NixCacheSource['closure']>>
  try {
    closure = await init.cache.closure(top, signal)
  } catch (err) {
    if (signal.aborted || !(err instanceof NixCacheError)) throw err
    const message = `asking the coordinator for the closure of ${top}: ${err.message}`
    throw new ActivatorError('download-failed', message, { cause: err })
  }
  const plan = await planFetch(init.nix, payload, closure.narinfos, closure.missing)
  await checkSpace(init.narDir, plan.served)
  await realise(init, payload, plan, onProgress, signal, log)
}

/** Which of `paths` the local store lacks. */
export function invalidPaths(nix: NixStore, paths: readonly string[]): Promise<string[]> {
  return nixStep('download-failed', () => nix.invalidPaths(paths))
}

/**
 * Decides, for every path of the closure missing here, where it comes from, and
 * refuses the update when one has no trustworthy source.
 */
async function planFetch(
  nix: NixStore,
  payload: OwnNixPayload,
  narinfos: readonly NarInfo[],
  missing: readonly string[],
): Promise<FetchPlan> {
  const byPath = new Map(narinfos.map((n) => [n.storePath, n]))
  const closure = [...new Set([...byPath.keys(), ...missing])]
  const keys = payload.trustedPublicKeys.map((k) => NixPublicKey.parse(k, 'trusted public key'))
  const external = payload.substituters.length > 0
  const checks = new Map(narinfos.map((n) => [n.storePath, checkNarInfoSignature(n, keys)]))
  const trusted = narinfos.filter((n) => checks.get(n.storePath)?.ok === true)
  const plan: FetchPlan = { closure, served: [], trusted, external: [] }
  const untrusted: string[] = []
  const unavailable: string[] = []
  for (const path of await invalidPaths(nix, closure)) {
    const info = byPath.get(path)
    const check = checks.get(path)
    if (info !== undefined && check?.ok === true) plan.served.push(info)
    // Nix checks signatures of what the manifest's own caches send (require-sigs).
    else if (external) plan.external.push(path)
    else if (check?.ok === false) untrusted.push(check.reason)
    else unavailable.push(path)
  }
  if (untrusted.length > 0) {
    throw new ActivatorError(
      'untrusted-path',
      `refusing ${payload.storePath}: ${count(untrusted.length, 'of its paths is', 'of its paths are')} not signed by a key the manifest trusts: ` +
        `${untrusted.slice(0, 3).join('; ')}${untrusted.length > 3 ? '; …' : ''}`,
    )
  }
  if (unavailable.length > 0) {
    throw new ActivatorError(
      'download-failed',
      `the coordinator does not have ${count(unavailable.length, 'path')} of ${payload.storePath} ` +
        `(${unavailable.slice(0, 3).join(', ')}${unavailable.length > 3 ? ', …' : ''}) and the manifest names no ` +
        'other substituters; push the closure to the coordinator first',
    )
  }
  return plan
}

/** Refuses a download that cannot fit: the NARs in narDir, the unpacked paths in the store. */
async function checkSpace(narDir: string, served: readonly NarInfo[]): Promise<void> {
  const total = served.reduce((n, i) => n + i.narSize, 0)
  if (total === 0) return
  await ensureDir(narDir)
  let present = 0
  for (const info of served) {
    const file = join(narDir, `${sha256HexOfNixHash(info.narHash)}.nar`)
    present += Math.min(info.narSize, (await fileSize(file)) ?? (await fileSize(`${file}.part`)) ?? 0)
  }
  const narBytes = total - present
  const narFree = await freeBytes(narDir)
  if (narBytes > narFree) {
    throw new ActivatorError(
      'no-space',
      `downloading ${count(served.length, 'path')} needs ${mib(narBytes)} MiB in ${narDir}, ${mib(narFree)} MiB free`,
    )
  }
  const storeFree = await freeBytes(STORE_DIR).catch(() => undefined)
  if (storeFree === undefined) return
  const shared = (await stat(narDir)).dev === (await stat(STORE_DIR)).dev
  const storeBytes = total + (shared ? narBytes : 0)
  if (storeBytes > storeFree) {
    throw new ActivatorError(
      'no-space',
      `installing ${count(served.length, 'path')} needs ${mib(storeBytes)} MiB in ${STORE_DIR}` +
        `${shared ? ' (the NARs are downloaded to the same disk)' : ''}, ${mib(storeFree)} MiB free`,
    )
  }
}

async function realise(
  init: NixosFetchInit,
  payload: OwnNixPayload,
  plan: FetchPlan,
  onProgress: (progress: FetchProgress) => void,
  signal: AbortSignal,
  log: (line: string) => void,
): Promise<void> {
  const top = payload.storePath
  const total = plan.served.reduce((n, i) => n + i.narSize, 0)
  onProgress({ done: 0, total })
  // A NAR that cannot be served fails the update at once, rather than after Nix's retries,
  // unless the manifest names other caches Nix can turn to for it.
  const stop = new AbortController()
  const fallback = payload.substituters.length > 0
  const cache = await NixSubstituter.start({
    narinfos: plan.trusted,
    narDir: init.narDir,
    fetchNar: (sha256, size, dest, progress, s, digest) =>
      init.cache.fetchNar(sha256, size, dest, progress, s, digest),
    prefetch: prefetchOrder(plan.served),
    onProgress: (done) => onProgress({ done: Math.min(done, total), total }),
    onFailure: (failure) => {
      if (!fallback) stop.abort(new Error(failure.message))
    },
  })
  let failure: unknown
  try {
    await rm(init.cacheHome, { recursive: true, force: true })
    await ensureDir(init.cacheHome)
    await init.nix.realise(top, {
      substituters: [cache.url, ...payload.substituters],
      trustedKeys: payload.trustedPublicKeys,
      cacheHome: init.cacheHome,
      gcRoot: init.pendingRoot,
      timeoutMs: init.realiseTimeoutMs,
      signal: AbortSignal.any([signal, stop.signal]),
    })
  } catch (err) {
    failure = err
  } finally {
    await cache.stop()
    await rm(init.cacheHome, { recursive: true, force: true })
  }
  if (failure !== undefined) {
    if (cache.failure !== null) throw new ActivatorError(cache.failure.code, cache.failure.message)
    if (signal.aborted) throw signal.reason
    throw realiseError(top, failure)
  }
  const { narsServed, bytesServed } = cache.stats
  await cache.removeDownloads()
  log(
    `fetched ${narsServed} of ${plan.closure.length} paths of ${top}, ${amount(bytesServed)} from the coordinator`,
  )
  if (plan.external.length > 0) {
    log(`${count(plan.external.length, 'path was', 'paths were')} left to ${payload.substituters.join(' ')}`)
  }
}

/**
 * The order the NARs are prefetched in: references before the paths that refer
 * to them, the order Nix substitutes paths in (one at a time), so that it finds
 * each NAR it asks for downloaded or on its way while it unpacks the previous
 * one. On the bench closure (100 equal leaves) this, plan order and largest
 * first measured alike; on a real closure, largest first would leave Nix to ask
 * for the many small paths before their turn came, each a round trip again.
 */
export function prefetchOrder(served: readonly NarInfo[]): NarInfo[] {
  const byPath = new Map(served.map((i) => [i.storePath, i]))
  const ordered: NarInfo[] = []
  const seen = new Set<string>()
  // Depth first with an explicit stack: a closure can be thousands of paths deep.
  for (const root of served) {
    if (seen.has(root.storePath)) continue
    seen.add(root.storePath)
    const stack: { info: NarInfo; next: number }[] = [{ info: root, next: 0 }]
    for (let top = stack.at(-1); top !== undefined; top = stack.at(-1)) {
      const ref = top.info.references[top.next++]
      if (ref === undefined) {
        ordered.push(top.info)
        stack.pop()
        continue
      }
      const info = byPath.get(`${STORE_DIR}/${ref}`)
      if (info !== undefined && !seen.has(info.storePath)) {
        seen.add(info.storePath)
        stack.push({ info, next: 0 })
      }
    }
  }
  return ordered
}

function realiseError(top: string, err: unknown): ActivatorError {
  if (!(err instanceof NixStoreError)) return activatorError(err, 'realise-failed', `realising ${top}`)
  if (err.code === 'not-installed') return activatorError(err, 'nix-unavailable')
  const output = tail(err.output.trim(), MAX_QUOTED_OUTPUT)
  const code = /No space left on device/.test(err.output) ? 'no-space' : 'realise-failed'
  return new ActivatorError(code, `Nix could not fetch ${top}: ${output || err.message}`, { cause: err })
}

async function freeBytes(dir: string): Promise<number> {
  const fs = await statfs(dir)
  return fs.bavail * fs.bsize
}

/** "1 path", "3 paths". */
function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}

function amount(bytes: number): string {
  return bytes >= MiB ? `${mib(bytes)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1)
}
