/**
 * The admin ops on the Nix binary cache (`nix-missing`, `nix-put`,
 * `nix-closure`): each one's result and the detail its audit record keeps.
 * admin-rpc.ts authenticates, audits and answers; nix-cache.ts does the work.
 */
import type { AdminOp, NixClosure, NixMissing, NixPut } from '../protocol/index.ts'
import { type NixCache, NixCacheError } from './nix-cache.ts'

export type NixAdminOp = Extract<AdminOp, { op: 'nix-missing' | 'nix-put' | 'nix-closure' }>

export interface NixOpOutcome {
  result: NixMissing | NixPut | NixClosure
  /** For the audit log */
  detail: string
}

/**
 * Runs one nix op as of `now`; `maxReplyBytes` bounds the reply frame.
 *
 * @throws {NixCacheError} a refusal the admin is told about
 */
export async function runNixOp(
  cache: NixCache,
  body: NixAdminOp,
  now: number,
  maxReplyBytes: number,
): Promise<NixOpOutcome> {
  switch (body.op) {
    case 'nix-missing': {
      const missing = await cache.missing(body.storePaths, now)
      return { result: { missing }, detail: `${missing.length} of ${body.storePaths.length} missing` }
    }
    case 'nix-put': {
      const result = await cache.put(body.narinfos, now)
      return { result, detail: `${result.stored} stored, ${result.alreadyHad} already had` }
    }
    case 'nix-closure': {
      const result = await closureSummary(cache, body.storePath, maxReplyBytes)
      return {
        result,
        detail: `${body.storePath}: ${result.paths} held, ${result.missing.length} missing`,
      }
    }
  }
}

async function closureSummary(
  cache: NixCache,
  storePath: string,
  maxReplyBytes: number,
): Promise<NixClosure> {
  const { held, missing } = await cache.closure(storePath)
  // A few thousand missing paths outgrow one reply; nix-missing lists them in batches.
  const bytes = missing.reduce((sum, p) => sum + p.length + 3, 1024)
  if (bytes > maxReplyBytes)
    throw new NixCacheError(
      'too-many-missing',
      `the cache lacks ${missing.length} paths of the closure of ${storePath}, too many to list in one reply; ` +
        'push the closure (fleetmesh nix push), which asks for the missing paths in batches',
    )
  return { paths: held.length, narSize: held.reduce((sum, r) => sum + r.narSize, 0), missing }
}
