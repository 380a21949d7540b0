/**
 * Uploading a content-addressed blob to the coordinator (`upload-blob`): the
 * request names the blob by sha256 and size; the coordinator answers that it
 * has it already, or from which offset to send (an interrupted upload resumes);
 * the data follows in frames, and after the admin closes its side the coordinator
 * says whether the whole blob arrived and matched its hash.
 */
import { open, stat } from 'node:fs/promises'
import { sha256File, sha256Hex } from '../lib/index.ts'
import { BLOB_CHUNK_BYTES, uploadResult } from '../protocol/index.ts'
import { type AdminClient, AdminRequestError } from './client.ts'

/** The coordinator hashes the whole blob before it answers the last frame. */
const COMPLETION_TIMEOUT_MS = 120_000
const PROGRESS_EVERY_BYTES = 4 * 1024 * 1024

export interface UploadSource {
  sha256: string
  size: number
  /** The bytes from `offset` to the end, in chunks of at most BLOB_CHUNK_BYTES (the frame limit). */
  chunks(offset: number): AsyncIterable<Uint8Array>
}

export type UploadOutcome = 'already-stored' | 'uploaded'

/**
 * A file on disk, read from disk as it is sent; hashed now unless the caller
 * already knows its hash and size (it hashed the bytes while writing them).
 */
export async function fileSource(
  path: string,
  known?: { sha256: string; size: number },
): Promise<UploadSource> {
  const size = known?.size ?? (await stat(path)).size
  return {
    sha256: known?.sha256 ?? (await sha256File(path)),
    size,
    async *chunks(offset) {
      const handle = await open(path, 'r')
      try {
        for (let at = offset; at < size; ) {
          // A buffer per chunk, handed on as is: the sender may still hold the previous one.
          const buf = Buffer.allocUnsafe(Math.min(BLOB_CHUNK_BYTES, size - at))
          const { bytesRead } = await handle.read(buf, 0, buf.byteLength, at)
          if (bytesRead === 0) throw new Error(`${path} shrank while uploading`)
          yield buf.subarray(0, bytesRead)
          at += bytesRead
        }
      } finally {
        await handle.close()
      }
    },
  }
}

/** Bytes already in memory. */
export function bytesSource(bytes: Uint8Array): UploadSource {
  return {
    sha256: sha256Hex(bytes),
    size: bytes.byteLength,
    async *chunks(offset) {
      for (let at = offset; at < bytes.byteLength; at += BLOB_CHUNK_BYTES)
        yield bytes.subarray(at, Math.min(at + BLOB_CHUNK_BYTES, bytes.byteLength))
    },
  }
}

/**
 * Uploads the blob unless the coordinator has it; `progress` gets human-readable
 * lines, `onSent` the count of this blob's bytes the coordinator has (resumed
 * bytes included) after each frame.
 */
export async function uploadBlob(
  client: AdminClient,
  source: UploadSource,
  progress: (message: string) => void = () => {},
  onSent: (bytes: number) => void = () => {},
): Promise<UploadOutcome> {
  const { sha256, size } = source
  const fs = await client.open({ op: 'upload-blob', sha256, size })
  try {
    const start = await client.readResult(fs, uploadResult)
    if (start.complete) return 'already-stored'
    const offset = start.offset ?? 0
    if (offset > 0) progress(`resuming upload at ${offset} bytes`)
    let sent = offset
    let lastShown = 0
    onSent(sent)
    for await (const chunk of source.chunks(offset)) {
      await fs.send(chunk)
      sent += chunk.byteLength
      onSent(sent)
      if (sent - lastShown >= PROGRESS_EVERY_BYTES || sent === size) {
        progress(`uploaded ${sent}/${size} bytes (${Math.round((sent / size) * 100)}%)`)
        lastShown = sent
      }
    }
    await fs.close()
    const done = await client.readResult(fs, uploadResult, COMPLETION_TIMEOUT_MS)
    if (!done.complete)
      throw new AdminRequestError(
        'upload-incomplete',
        `coordinator did not receive all of blob ${sha256.slice(0, 12)}…; run the command again to resume the upload`,
      )
    return 'uploaded'
  } finally {
    if (fs.stream.status === 'open') await fs.close().catch(() => {})
  }
}
