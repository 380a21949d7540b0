/**
 * The coordinator's side of `/fleetmesh/blob/1` for downloads: an enrolled agent
 * asks for a blob by sha256 from an offset (so an interrupted download resumes),
 * gets its size, then the bytes as frames until the stream closes. Only the
 * blobs of the machine's desired manifest are served (its archive, or the NARs
 * of its NixOS closure: with a closure map, of its own). A download
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
  MAX_CLOSURE_PATHS,
  nixStorePathFor,
  openManifest,
  type Payload,
} from '../protocol/index.ts'
import type { BlobStore } from './blobs.ts'
import type { FleetStore } from './store.ts'

/**
 * The blobs a machine's desired manifest needs: its archive, or the NARs of its
 * NixOS closure as the cache holds it (of a closure map, the machine's own
 * closure only). Cached per manifest and machine, since a closure's NARs are
 * fetched one request at a time and the walk is the same each time.
 */
class DesiredBlobs {
  static readonly #KEEP = 64
  readonly #byManifest = new Map<string, ReadonlySet<string>>()
  readonly store: FleetStore
  constructor(store: FleetStore) {
    this.store = store
  }

  async allows(machine: string, sha256: string): Promise<boolean> {
    const desired = await this.store.getDesired(machine)
    if (desired === undefined) return false
    const key = `${desired.id} ${machine}`
    let allowed = this.#byManifest.get(key)
    if (allowed === undefined) {
      allowed = await this.#blobsOf(openManifest(desired.envelope).value.payload, machine)
      if (this.#byManifest.size >= DesiredBlobs.#KEEP) this.#byManifest.clear()
      this.#byManifest.set(key, allowed)
    }
    return allowed.has(sha256)
  }

  async #blobsOf(payload: Payload, machine: string): Promise<ReadonlySet<string>> {
    if (payload.kind === 'archive') return new Set([payload.sha256])
    // A machine of a closure map fetches its own closure, not its neighbours'.
    const own = nixStorePathFor(payload, machine)
    if (own === undefined) return new Set()
    const closure = await this.store.narInfoClosure(own, MAX_CLOSURE_PATHS)
    return new Set(closure.held.map((n) => n.narSha256))
  }
}

export function blobHandler(store: FleetStore, blobs: BlobStore) {
  const desired = new DesiredBlobs(store)
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
    const size = (await desired.allows(machine.name, request.sha256))
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
