/** SHA-256 of bytes and of files, as lowercase hex: how blobs are named everywhere in fleetmesh. */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Streams the file through SHA-256, so a large archive is never held in memory. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
