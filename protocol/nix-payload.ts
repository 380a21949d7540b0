/**
 * The `nix` payload of a manifest: one NixOS system closure for every target
 * (`storePath`), or one per machine (`storePaths`, a closure map), exactly one
 * of the two. A closure map lets a fleet whose machines each have their own
 * system roll out as ONE manifest, so in waves; its targets must then be
 * exactly the map's machines (manifest.ts, rule "closure-map-mismatch"), and
 * each machine installs, and may fetch, only its own closure. Agents from
 * before the map refuse such a manifest (their schema is strict).
 *
 * @example
 *
 * ```ts
 * const path = nixStorePathFor(manifest.payload, 'edge-1') // undefined: not in the map
 * ```
 */
import { z } from 'zod'
import { machineName, NixPublicKey } from '../keys/index.ts'
import { isStorePath } from './narinfo.ts'

/**
 * Machines one closure map may name. A manifest lists each twice (map and
 * targets), so at ~50 bytes per shortest entry this is about what the 256 KiB
 * envelope holds; for realistic names the envelope's size limit binds first.
 */
export const MAX_CLOSURE_MAP_MACHINES = 5000

/** A Nix store path: /nix/store/<32 base32 chars>-<name>. */
export const storePath = z
  .string()
  .max(512)
  .refine(isStorePath, 'a /nix/store/<32-character hash>-<name> path')

/** A Nix binary cache public key, "<name>:<base64 of 32 bytes>", as in nix.conf. */
export const nixPublicKeyText = z
  .string()
  .max(256)
  .refine(
    (text) => {
      try {
        NixPublicKey.parse(text)
        return true
      } catch {
        return false
      }
    },
    { message: 'a Nix public key "<name>:<base64 of 32 bytes>"' },
  )

/** `{ machine: store path }`: each machine's own system closure. */
export const closureMapSchema = z
  .record(machineName, storePath)
  .refine((map) => Object.keys(map).length >= 1, 'a closure map names at least one machine')
  .refine(
    (map) => Object.keys(map).length <= MAX_CLOSURE_MAP_MACHINES,
    `a closure map names at most ${MAX_CLOSURE_MAP_MACHINES} machines`,
  )

export const nixPayloadSchema = z
  .strictObject({
    kind: z.literal('nix'),
    /** The closure every target installs */
    storePath: storePath.optional(),
    /** Or each machine's own closure (agents before it refuse it) */
    storePaths: closureMapSchema.optional(),
    /** HTTP(S) binary caches the devices can reach themselves, tried after the coordinator's */
    substituters: z.array(z.url({ protocol: /^https?$/ }).max(2048)).max(16),
    /** Every path of the closure must carry a signature by one of these */
    trustedPublicKeys: z.array(nixPublicKeyText).min(1).max(16),
  })
  .refine((p) => (p.storePath === undefined) !== (p.storePaths === undefined), {
    message: 'a nix payload has either storePath or storePaths, exactly one',
    path: ['storePath'],
  })
export type NixPayload = z.infer<typeof nixPayloadSchema>

/** The closure `machine` installs: the one store path, or its own from the map (undefined: not in it). */
export function nixStorePathFor(payload: NixPayload, machine: string): string | undefined {
  if (payload.storePath !== undefined) return payload.storePath
  return Object.hasOwn(payload.storePaths ?? {}, machine) ? payload.storePaths?.[machine] : undefined
}

/** Every closure the payload names, each once, sorted. */
export function nixStorePaths(payload: NixPayload): string[] {
  if (payload.storePath !== undefined) return [payload.storePath]
  return [...new Set(Object.values(payload.storePaths ?? {}))].sort()
}

/** The payload for only `machines`: a closure map narrowed to them (a manifest targets exactly its map). */
export function narrowClosureMap(payload: NixPayload, machines: readonly string[]): NixPayload {
  const map = payload.storePaths
  if (map === undefined) return payload
  const kept = machines.flatMap((m) => {
    const path = nixStorePathFor(payload, m)
    return path === undefined ? [] : [[m, path] as const]
  })
  return { ...payload, storePaths: Object.fromEntries(kept) }
}
