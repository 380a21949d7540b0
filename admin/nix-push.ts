/**
 * Pushing Nix closures from the admin's local store into the coordinator's
 * binary cache: the closure of the given paths, minus what the cache already
 * holds, each NAR uploaded as an ordinary blob (resumable) and then described
 * by a narinfo in the form the coordinator serves (`Compression: none`, the NAR
 * named by the hex SHA-256 of its bytes), signed so agents accept it.
 *
 * Signing happens before anything is uploaded, so a missing key fails at once
 * rather than after gigabytes. NARs are dumped and uploaded a few at a time;
 * each narinfo goes up only after its NAR has arrived.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { NixPublicKey, NixSigningKey } from '../keys/index.ts'
import { CodedError, serialiser } from '../lib/index.ts'
import {
  checkNarInfoSignature,
  formatNarInfo,
  type NarInfo,
  type NixPut,
  nixSha256,
  signNarInfo,
} from '../protocol/index.ts'
import { type AdminClient, NIX_PUT_BATCH } from './client.ts'
import {
  dumpNar,
  type LocalPathInfo,
  type NixCallOptions,
  pathInfos,
  requireInStore,
  storeClosure,
} from './nix-store.ts'
import { fileSource, type UploadOutcome, type UploadSource, uploadBlob } from './upload.ts'

export class NixPushError extends CodedError<'no-signing-key'> {
  override name = 'NixPushError'
}

/**
 * NARs dumped and uploaded at a time. Each upload pays fixed costs (a signed
 * request, the coordinator's fsync and audit record) and each dump a process
 * start; a few at a time overlap those with each other's transfer, without
 * holding more than a few NARs in the temp directory at once.
 */
export const PUSH_CONCURRENCY = 4

/** Where closures are pushed: the coordinator's cache, or a stand-in in tests. */
export interface NixCacheTarget {
  nixMissing(storePaths: readonly string[]): Promise<string[]>
  nixPut(narinfos: readonly string[]): Promise<NixPut>
  /** Uploads a NAR as a blob; `onSent` gets how many of its bytes the cache has so far. */
  uploadNar(source: UploadSource, onSent: (bytes: number) => void): Promise<UploadOutcome>
}

export function coordinatorCache(client: AdminClient): NixCacheTarget {
  return {
    nixMissing: (paths) => client.nixMissing(paths),
    nixPut: (narinfos) => client.nixPut(narinfos),
    uploadNar: (source, onSent) => uploadBlob(client, source, () => {}, onSent),
  }
}

export interface PushProgress {
  type: 'push-progress'
  /** NAR bytes the cache holds of those this push must upload */
  sentBytes: number
  totalBytes: number
  /** NARs finished of those this push must upload */
  doneNars: number
  totalNars: number
}

export interface PushOptions extends NixCallOptions {
  /** A path signed by one of these keeps its signatures; any other is signed with `signingKey`. */
  trustedKeys: readonly NixPublicKey[]
  signingKey: NixSigningKey | undefined
  /** Called about once per `progressIntervalMs` while uploading, and once at the end (when anything was uploaded). */
  onProgress?: (progress: PushProgress) => void
  progressIntervalMs?: number
  /** Where NARs are dumped before upload (up to `concurrency` at a time); default the system temp directory. */
  tempDir?: string
  /** NARs dumped and uploaded at a time. Default {@link PUSH_CONCURRENCY}. */
  concurrency?: number
}

export interface PushResult {
  /** Paths in the closure of the pushed paths */
  closure: number
  /** Of those, the ones the cache lacked */
  missing: number
  /** NAR bytes of the missing paths */
  narBytes: number
  /** NARs the cache turned out to hold already (an earlier push stopped before its narinfos) */
  narsAlreadyStored: number
  /** Narinfos signed with the admin's Nix key */
  signed: number
  stored: number
  alreadyHad: number
}

/**
 * The narinfo the coordinator serves for a path: its NAR uncompressed, named
 * by the hex SHA-256 of the NAR, references and deriver as basenames, and the
 * signatures the local store holds.
 */
export function buildNarInfo(info: LocalPathInfo): NarInfo {
  const hash = nixSha256(info.narSha256)
  return {
    storePath: info.path,
    url: `nar/${info.narSha256}.nar`,
    compression: 'none',
    fileHash: hash,
    fileSize: info.narSize,
    narHash: hash,
    narSize: info.narSize,
    references: [...info.references].sort(),
    deriver: info.deriver,
    ca: info.ca,
    sigs: [...info.signatures],
  }
}

/**
 * The narinfo as is when a trusted key signed it; otherwise signed with `key`.
 * Content-addressed paths are signed too: agents require a signature on every path.
 */
export function signForTrust(
  info: NarInfo,
  trustedKeys: readonly NixPublicKey[],
  key: NixSigningKey | undefined,
): { narinfo: NarInfo; signed: boolean } {
  if (checkNarInfoSignature(info, trustedKeys).ok) return { narinfo: info, signed: false }
  if (key === undefined)
    throw new NixPushError(
      'no-signing-key',
      `${info.storePath} carries no signature by a trusted key (${trustedKeys.map((k) => k.name).join(', ') || 'none given'}) ` +
        'and there is no Nix signing key to sign it with; run "fleetmesh nix keygen" first',
    )
  return { narinfo: signNarInfo(info, key), signed: true }
}

/** Pushes the closures of `storePaths` (each valid in the local store) into `target`. */
export async function pushClosures(
  target: NixCacheTarget,
  storePaths: readonly string[],
  options: PushOptions,
): Promise<PushResult> {
  await requireInStore(storePaths, options)
  const closure = await storeClosure(storePaths, options)
  const missingSet = new Set(await target.nixMissing(closure))
  const missing = await pathInfos(
    closure.filter((p) => missingSet.has(p)),
    options,
  )
  const trusted = options.signingKey
    ? [...options.trustedKeys, options.signingKey.publicKey]
    : options.trustedKeys
  let signed = 0
  const narinfos = missing.map((info) => {
    const result = signForTrust(buildNarInfo(info), trusted, options.signingKey)
    if (result.signed) signed++
    return formatNarInfo(result.narinfo)
  })

  const progress: PushProgress = {
    type: 'push-progress',
    sentBytes: 0,
    totalBytes: missing.reduce((sum, info) => sum + info.narSize, 0),
    doneNars: 0,
    totalNars: missing.length,
  }
  const interval = options.progressIntervalMs ?? 1000
  let lastShown = Date.now()
  const report = (final: boolean) => {
    if (!final && Date.now() - lastShown < interval) return
    lastShown = Date.now()
    options.onProgress?.({ ...progress })
  }

  const totals = { stored: 0, alreadyHad: 0, narsAlreadyStored: 0 }
  let pending: string[] = []
  let pendingBytes = 0
  // One nix-put at a time, each with the narinfos whose NARs had arrived when it was queued.
  const serial = serialiser()
  const flush = () =>
    serial(async () => {
      if (pending.length === 0) return
      const batch = pending
      const bytes = pendingBytes
      pending = []
      pendingBytes = 0
      try {
        const put = await target.nixPut(batch)
        totals.stored += put.stored
        totals.alreadyHad += put.alreadyHad
      } catch (err) {
        // Back in line for the flush that follows a failure.
        pending = [...batch, ...pending]
        pendingBytes += bytes
        throw err
      }
    })

  const dir = await mkdtemp(join(options.tempDir ?? tmpdir(), 'fleetmesh-nar-'))
  const pushOne = async (i: number) => {
    const info = missing[i] as LocalPathInfo
    const file = join(dir, `${info.narSha256}.nar`)
    await dumpNar(info, file, options)
    let sent = 0
    const outcome = await target.uploadNar(
      await fileSource(file, { sha256: info.narSha256, size: info.narSize }),
      (bytes) => {
        progress.sentBytes += bytes - sent
        sent = bytes
        report(false)
      },
    )
    await rm(file, { force: true })
    if (outcome === 'already-stored') totals.narsAlreadyStored++
    progress.sentBytes += info.narSize - sent
    progress.doneNars++
    report(false)
    // A narinfo goes up only after its NAR: the cache never names bytes it lacks.
    const text = narinfos[i] as string
    pending.push(text)
    pendingBytes += text.length
    if (pending.length >= NIX_PUT_BATCH.items || pendingBytes >= NIX_PUT_BATCH.bytes) await flush()
  }
  try {
    await inParallel(missing.length, options.concurrency ?? PUSH_CONCURRENCY, pushOne)
    await flush()
  } catch (err) {
    // Keep what did arrive: the NARs uploaded so far are worth their narinfos on the next run too.
    await flush().catch(() => {})
    throw err
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  if (progress.totalNars > 0) report(true)
  return {
    closure: closure.length,
    missing: missing.length,
    narBytes: progress.totalBytes,
    narsAlreadyStored: totals.narsAlreadyStored,
    signed,
    stored: totals.stored,
    alreadyHad: totals.alreadyHad,
  }
}

/**
 * Runs `task(0)` … `task(count - 1)`, `width` at a time. After a failure no
 * further task starts; the running ones are waited for, then the first failure
 * is thrown.
 */
async function inParallel(
  count: number,
  width: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0
  let failure: { err: unknown } | undefined
  const worker = async () => {
    while (failure === undefined && next < count) {
      const index = next++
      try {
        await task(index)
      } catch (err) {
        failure ??= { err }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(Math.max(1, width), count) }, worker))
  if (failure !== undefined) throw failure.err
}

const MIB = 1024 * 1024

/** "pushing closure: 12.3/100.0 MiB (12%), 5/101 paths" */
export function describeProgress(p: PushProgress): string {
  const pct = p.totalBytes > 0 ? Math.floor((p.sentBytes / p.totalBytes) * 100) : 100
  return `pushing closure: ${(p.sentBytes / MIB).toFixed(1)}/${(p.totalBytes / MIB).toFixed(1)} MiB (${pct}%), ${p.doneNars}/${p.totalNars} paths`
}

export function describePush(r: PushResult): string {
  if (r.missing === 0) return `the coordinator's cache already holds all ${r.closure} paths of the closure`
  return (
    `pushed ${r.missing} of ${r.closure} paths (${(r.narBytes / MIB).toFixed(1)} MiB)` +
    `${r.signed > 0 ? `, signed ${r.signed}` : ''}${r.narsAlreadyStored > 0 ? `, ${r.narsAlreadyStored} NARs were already uploaded` : ''}`
  )
}
