/**
 * The coordinator's side of `/fleetmesh/blob/1` for downloads: an enrolled agent
 * asks for a blob by sha256 from an offset (so an interrupted download resumes),
 * gets its size, then the bytes as frames until the stream closes. Only the
 * archive of the machine's desired manifest is served. A download
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
  openManifest,
} from '../protocol/index.ts'
import type { BlobStore } from './blobs.ts'
import type { FleetStore } from './store.ts'

/** The sha256 of the archive in `machine`'s desired manifest, if that is an archive. */
async function desiredArchive(store: FleetStore, machine: string): Promise<string | undefined> {
  const desired = await store.getDesired(machine)
  if (desired === undefined) return undefined
  const { payload } = openManifest(desired.envelope).value
  return payload.kind === 'archive' ? payload.sha256 : undefined
}

export function blobHandler(store: FleetStore, blobs: BlobStore) {
  return async (fs: FramedStream, connection: Connection): Promise<void> => {
    const request = decodeMessage(
      blobRequestSchema,
      await fs.readOne({ timeoutMs: 30_000 }),
      'blob request',
      4096,
    )
    const respond = (r: BlobResponse) => fs.send(encodeMessage(blobResponseSchema, r))
    const machine = await store.getMachineByPeer(connection.remotePeer.toString())
    if (machine === undefined) {
      await respond({
        ok: false,
        error: { code: 'not-enrolled', message: 'only enrolled machines may download blobs' },
      })
      return
    }
    // A machine gets the archive it is to install, nothing else: a compromised lab
    // device must not fetch the archives signed for other machines by their hash.
    // Refused exactly like an unknown hash, so the answer says nothing about the store.
    const size =
      (await desiredArchive(store, machine.name)) === request.sha256
        ? await blobs.size(request.sha256)
        : undefined
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
