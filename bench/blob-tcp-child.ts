/**
 * The raw-TCP reference of the blob benchmark (bench/blob.ts), in its own process
 * as the coordinator is: it serves one blob from the coordinator's own BlobStore,
 * read in the same 256 KiB chunks the blob protocol sends, each written to a
 * plain TCP socket with a 4-byte length prefix, as a frame of the blob protocol
 * is (no Noise, no Yamux, no libp2p).
 *
 * `node bench/blob-tcp-child.ts <blobs-dir> <sha256>`: prints the port, serves
 * one connection, then exits.
 */
import { createServer } from 'node:net'
import { BlobStore } from '../coordinator/blobs.ts'
import { BLOB_CHUNK_BYTES } from '../protocol/index.ts'

const [dir, sha256] = process.argv.slice(2)
if (dir === undefined || sha256 === undefined)
  throw new Error('usage: blob-tcp-child.ts <blobs-dir> <sha256>')
const blobs = new BlobStore(dir)
const server = createServer(async (socket) => {
  server.close()
  for await (const chunk of blobs.read(sha256, 0, BLOB_CHUNK_BYTES)) {
    const prefix = Buffer.alloc(4)
    prefix.writeUInt32BE(chunk.byteLength)
    socket.write(prefix)
    // the same backpressure as FramedStream.send: wait for a drain when the buffer is full
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve))
  }
  socket.end()
})
server.listen(0, '127.0.0.1', () => {
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  process.stdout.write(`${address.port}\n`)
})
