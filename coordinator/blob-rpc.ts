/**
 * The coordinator's side of `/fleetmesh/blob/1` for downloads: an enrolled agent
 * asks for a blob by sha256 from an offset (so an interrupted download resumes),
 * gets its size, then the bytes as frames until the stream closes. A download
 * whose reader stalls is reset after the upload idle timeout (upload-quota.ts).
 */
import type { Connection } from '@libp2p/interface'
import type { FramedStream } from '../protocol/index.ts'
import {
  BLOB_CHUNK_BYTES,
  type BlobResponse,
  blobRequestSchema,
  blobResponseSchema,
  decodeMessage,
  encodeMessage,
} from '../protocol/index.ts'
import type { BlobStore } from './blobs.ts'
import type { FleetStore } from './store.ts'

/** Re-exported for daemon.ts, which sizes the blob and admin streams' frame limits by it. */

export function blobHandler(store: FleetStore, blobs: BlobStore) {
  return async (fs: FramedStream, connection: Connection): Promise<void> => {
    const request = decodeMessage(
      blobRequestSchema,
      await fs.readOne({ timeoutMs: 30_000 }),
      'blob request',
      4096,
    )
    const respond = (r: BlobResponse) => fs.send(encodeMessage(blobResponseSchema, r))
    if ((await store.getMachineByPeer(connection.remotePeer.toString())) === undefined) {
      await respond({
        ok: false,
        error: { code: 'not-enrolled', message: 'only enrolled machines may download blobs' },
      })
      return
    }
    const size = await blobs.size(request.sha256)
    if (size === undefined) {
      await respond({
        ok: false,
        error: { code: 'not-found', message: `no blob ${request.sha256} on this coordinator` },
      })
      return
    }
    if (request.offset > size) {
      await respond({
        ok: false,
        error: { code: 'bad-offset', message: `offset ${request.offset} is past the end (${size} bytes)` },
      })
      return
    }
    await respond({ ok: true, size })
    if (request.offset === size) return
    // An agent that stops reading is cut off after the upload idle timeout, not waited for forever.
    const idleMs = blobs.uploads.limits.idleTimeoutMs
    for await (const chunk of blobs.read(request.sha256, request.offset, BLOB_CHUNK_BYTES)) {
      await fs.send(chunk, { signal: AbortSignal.timeout(idleMs) })
    }
  }
}
