/**
 * The coordinator's side of `/fleetmesh/nix/1`: an enrolled agent names a
 * store path and gets one `narinfo` frame per path of its closure the cache
 * holds, then `end` with the paths it lacks, or a single `error` frame.
 * Peers that may not download blobs (see blob-rpc.ts: enrolled machines only)
 * may not list the cache either.
 */
import type { Connection } from '@libp2p/interface'
import {
  decodeMessage,
  encodeMessage,
  type FramedStream,
  type NixClosureFrame,
  nixClosureFrameSchema,
  nixClosureRequestSchema,
} from '../protocol/index.ts'
import { type NixCache, NixCacheError } from './nix-cache.ts'
import type { FleetStore } from './store.ts'

/** A closure request is a store path and little else. */
const MAX_REQUEST_BYTES = 4096

export function nixCacheHandler(store: FleetStore, cache: NixCache) {
  return async (fs: FramedStream, connection: Connection): Promise<void> => {
    const request = decodeMessage(
      nixClosureRequestSchema,
      await fs.readOne({ timeoutMs: 30_000 }),
      'nix closure request',
      MAX_REQUEST_BYTES,
    )
    const send = (frame: NixClosureFrame) => fs.send(encodeMessage(nixClosureFrameSchema, frame))
    if ((await store.getMachineByPeer(connection.remotePeer.toString())) === undefined) {
      await send({
        t: 'error',
        error: { code: 'not-enrolled', message: 'only enrolled machines may use the Nix cache' },
      })
      return
    }
    let closure: Awaited<ReturnType<NixCache['closure']>>
    try {
      closure = await cache.closure(request.storePath)
    } catch (err) {
      if (!(err instanceof NixCacheError)) throw err
      await send({ t: 'error', error: { code: err.code, message: err.message } })
      return
    }
    const end = encodeMessage(nixClosureFrameSchema, {
      t: 'end',
      paths: closure.held.length,
      missing: closure.missing,
    })
    // The agent needs every missing path to accept the answer, so a list that does not fit one
    // frame is an error up front rather than a truncated (and rejected) end frame.
    if (end.byteLength > fs.maxFrameBytes) {
      await send({
        t: 'error',
        error: {
          code: 'too-many-missing',
          message:
            `the cache lacks ${closure.missing.length} paths of the closure of ${request.storePath}, ` +
            'too many to list; push the closure to the coordinator (fleetmesh nix push)',
        },
      })
      return
    }
    for (const record of closure.held) await send({ t: 'narinfo', narinfo: record.narinfo })
    await fs.send(end)
  }
}
