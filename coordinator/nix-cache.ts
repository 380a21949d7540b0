/**
 * The coordinator's Nix binary cache: narinfos in the FleetStore, NARs as
 * ordinary blobs named by the hex SHA-256 of their uncompressed bytes. Admins
 * upload NARs with `upload-blob` and then describe them with `nix-put`; agents
 * fetch whole closures over `/fleetmesh/nix/1` (nix-cache-rpc.ts) and the NARs
 * over `/fleetmesh/blob/1`. A path counts as held only while both its narinfo
 * and its NAR blob, of the size the narinfo states, are there.
 *
 * Every narinfo is stored in the one form the cache serves (`Compression: none`,
 * `URL: nar/<hex>.nar`, `FileHash` = `NarHash`, `FileSize` = `NarSize`). That
 * rewrite keeps signatures valid, since they cover only the fingerprint. The
 * signatures are kept but not checked here: each agent checks them against its
 * manifest's trusted keys, so the coordinator is trusted for availability only.
 *
 * @example
 *
 * ```ts
 * const cache = new NixCache(store, blobs)
 * const { stored, alreadyHad } = await cache.put([narinfoText], Date.now())
 * const { held, missing } = await cache.closure('/nix/store/…-nixos-system-web-1')
 * ```
 */
import { CodedError } from '../lib/index.ts'
import {
  formatNarInfo,
  MAX_CLOSURE_PATHS,
  type NarInfo,
  NarInfoError,
  type NixPut,
  nixSha256,
  parseNarInfo,
  sha256HexOfNixHash,
  storePathHash,
} from '../protocol/index.ts'
import type { BlobStore } from './blobs.ts'
import type { FleetStore, NarInfoRecord, NewNarInfo } from './store.ts'

export type NixCacheErrorCode =
  /** A pushed narinfo does not parse. */
  | 'bad-narinfo'
  /** A pushed narinfo describes a compressed NAR; the cache holds them uncompressed only. */
  | 'compressed'
  | 'file-hash-mismatch'
  | 'file-size-mismatch'
  /** The NAR a pushed narinfo names is not among the blobs. */
  | 'nar-missing'
  | 'nar-size-mismatch'
  | 'closure-too-large'
  /** More missing paths than one reply can list */
  | 'too-many-missing'

/** A request the cache refuses; the message names the path and the rule. */
export class NixCacheError extends CodedError<NixCacheErrorCode> {
  override name = 'NixCacheError'
}

/** What the cache holds of a closure. */
export interface HeldClosure {
  /** Paths whose narinfo and NAR are both there */
  held: NarInfoRecord[]
  /** Paths of the closure the cache lacks, sorted */
  missing: string[]
}

/** NAR blobs are checked this many at a time: a closure can have thousands. */
const STAT_BATCH = 256

export class NixCache {
  readonly store: FleetStore
  readonly blobs: BlobStore

  constructor(store: FleetStore, blobs: BlobStore) {
    this.store = store
    this.blobs = blobs
  }

  /**
   * The paths among `storePaths` the cache lacks (no narinfo, or its NAR is
   * gone), in the order asked. The ones it holds are touched: an admin asks
   * before a push, and what the push did not need to send is kept through the
   * grace period just as what it sent.
   */
  async missing(storePaths: readonly string[], now: number): Promise<string[]> {
    const records = await this.store.getNarInfos(storePaths.map(storePathHash))
    const byPath = new Map(records.map((r) => [r.storePath, r]))
    const asked = [...new Set(storePaths)]
    const candidates = asked.flatMap((p) => byPath.get(p) ?? [])
    const present = await this.#narsPresent(candidates)
    const held = new Set(candidates.filter((_, i) => present[i]).map((r) => r.storePath))
    await this.store.touchNarInfos(
      [...held].map((p) => storePathHash(p)),
      now,
    )
    return asked.filter((p) => !held.has(p))
  }

  /**
   * Checks every narinfo first and stores none unless all pass (see
   * {@link checkNarInfo} for the rules), then stores them normalised.
   *
   * @throws {NixCacheError} naming the first narinfo that breaks a rule, and the rule
   */
  async put(texts: readonly string[], now: number): Promise<NixPut> {
    const records = texts.map((text, index) => checkNarInfo(text, index))
    for (const record of records) {
      const size = await this.blobs.size(record.narSha256)
      if (size === undefined)
        throw new NixCacheError(
          'nar-missing',
          `${record.storePath}: its NAR (blob ${record.narSha256}) is not on the coordinator; upload the NAR before its narinfo`,
        )
      if (size !== record.narSize)
        throw new NixCacheError(
          'nar-size-mismatch',
          `${record.storePath}: its NAR (blob ${record.narSha256}) has ${size} bytes, but the narinfo's NarSize is ${record.narSize}`,
        )
    }
    const outcomes = await this.store.putNarInfos(records, now)
    const stored = outcomes.filter((o) => o === 'stored').length
    return { stored, alreadyHad: outcomes.length - stored }
  }

  /**
   * The part of `storePath`'s closure the cache holds, and the paths it lacks;
   * a path whose NAR is gone counts as lacking.
   *
   * @throws {NixCacheError} 'closure-too-large' past MAX_CLOSURE_PATHS paths
   */
  async closure(storePath: string): Promise<HeldClosure> {
    const closure = await this.store.narInfoClosure(storePath, MAX_CLOSURE_PATHS)
    if (closure.overflow)
      throw new NixCacheError(
        'closure-too-large',
        `the closure of ${storePath} has more than ${MAX_CLOSURE_PATHS} paths, more than the cache serves`,
      )
    const present = await this.#narsPresent(closure.held)
    const held = closure.held.filter((_, i) => present[i])
    const gone = closure.held.filter((_, i) => !present[i]).map((r) => r.storePath)
    return { held, missing: [...closure.missing, ...gone].sort() }
  }

  /** For each record, whether its NAR blob is there with the size the narinfo states. */
  async #narsPresent(records: readonly NarInfoRecord[]): Promise<boolean[]> {
    const out: boolean[] = []
    for (let i = 0; i < records.length; i += STAT_BATCH) {
      const batch = records.slice(i, i + STAT_BATCH)
      const sizes = await Promise.all(batch.map((r) => this.blobs.size(r.narSha256)))
      out.push(...sizes.map((size, j) => size === batch[j]?.narSize))
    }
    return out
  }
}

/**
 * Checks one pushed narinfo (the `index`th of its request) against the rules
 * of the cache and returns it in the form the cache serves. Rules: it parses;
 * `Compression` is `none`; `FileHash`, if given, equals `NarHash` and
 * `FileSize`, if given, equals `NarSize` (the file is the NAR itself).
 * Whether the NAR is there is checked by the caller.
 *
 * @throws {NixCacheError}
 */
export function checkNarInfo(text: string, index: number): NewNarInfo {
  let info: NarInfo
  try {
    info = parseNarInfo(text)
  } catch (err) {
    if (!(err instanceof NarInfoError)) throw err
    throw new NixCacheError('bad-narinfo', `narinfo #${index + 1}: ${err.message}`, { cause: err })
  }
  const where = info.storePath
  if (info.compression !== 'none')
    throw new NixCacheError(
      'compressed',
      `${where}: Compression is "${info.compression}"; the cache holds NARs uncompressed only ` +
        '(Compression: none, as "nix copy --to file://…?compression=none" writes them)',
    )
  const narSha256 = sha256HexOfNixHash(info.narHash)
  if (info.fileHash !== null && sha256HexOfNixHash(info.fileHash) !== narSha256)
    throw new NixCacheError(
      'file-hash-mismatch',
      `${where}: FileHash ${info.fileHash} differs from NarHash ${info.narHash}; ` +
        'with Compression: none the file is the NAR itself',
    )
  if (info.fileSize !== null && info.fileSize !== info.narSize)
    throw new NixCacheError(
      'file-size-mismatch',
      `${where}: FileSize ${info.fileSize} differs from NarSize ${info.narSize}; ` +
        'with Compression: none the file is the NAR itself',
    )
  const narHash = nixSha256(narSha256)
  const normalised = formatNarInfo({
    ...info,
    url: `nar/${narSha256}.nar`,
    compression: 'none',
    fileHash: narHash,
    fileSize: info.narSize,
    narHash,
  })
  return {
    storePath: info.storePath,
    narinfo: normalised,
    narSha256,
    narSize: info.narSize,
    references: info.references,
  }
}
