/**
 * `/fleetmesh/nix/1`: an agent asks the coordinator's binary cache for the
 * narinfos of a whole closure in one round trip (a relayed connection makes
 * one request per path slow), and the coordinator streams them back:
 *
 *   agent → { t: 'closure', storePath }
 *   coordinator → { t: 'narinfo', narinfo } …   one frame per path it holds
 *   coordinator → { t: 'end', paths, missing }  or { t: 'error', error }
 *
 * Narinfos come as Nix writes them, signatures included: the agent checks each
 * against the manifest's trusted keys itself, so the coordinator is trusted
 * for availability only. A NAR is a blob named by the SHA-256 of its bytes
 * (uncompressed, so FileHash = NarHash), fetched with the resumable `blob`
 * protocol.
 */
import { z } from 'zod'
import { errorInfo, storePath } from './messages.ts'
import { MAX_NARINFO_BYTES } from './narinfo.ts'

/** The most paths one closure may have; NixOS systems have a few thousand. */
export const MAX_CLOSURE_PATHS = 50_000

export const nixClosureRequestSchema = z.strictObject({ t: z.literal('closure'), storePath })
export type NixClosureRequest = z.infer<typeof nixClosureRequestSchema>

export const nixClosureFrameSchema = z.discriminatedUnion('t', [
  z.strictObject({ t: z.literal('narinfo'), narinfo: z.string().max(MAX_NARINFO_BYTES) }),
  z.strictObject({
    t: z.literal('end'),
    /** How many narinfo frames came before this one */
    paths: z.number().int().nonnegative().max(MAX_CLOSURE_PATHS),
    /** Paths referenced in the closure that the cache does not hold */
    missing: z.array(storePath).max(MAX_CLOSURE_PATHS),
  }),
  z.strictObject({ t: z.literal('error'), error: errorInfo }),
])
export type NixClosureFrame = z.infer<typeof nixClosureFrameSchema>

/** The largest closure frame: a narinfo at its limit plus the CBOR around it. */
export const MAX_NIX_FRAME_BYTES = MAX_NARINFO_BYTES + 1024
