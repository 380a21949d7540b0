/**
 * The coordinator blob fetcher over real libp2p hosts on loopback: a download cut
 * off half way resumes from the bytes already on disk, and definitive refusals
 * fail at once.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ActivatorError } from '../../agent/activator.ts'
import { coordinatorBlobFetcher } from '../../agent/blob-fetcher.ts'
import { FileDigest } from '../../agent/file-digest.ts'
import { fileSize } from '../../lib/files.ts'
import { sha256Hex } from '../../lib/hash.ts'
import type { FleetHost } from '../../net/host.ts'
import { decodeMessage, encodeMessage } from '../../protocol/codec.ts'
import { handleFramed } from '../../protocol/framing.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { blobRequestSchema, blobResponseSchema } from '../../protocol/messages.ts'
import { waitFor } from './fixtures.ts'
import { loopbackHosts } from './hosts.ts'

const { host, stopAll } = loopbackHosts()
let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-blob-'))
})
afterEach(async () => {
  await stopAll()
  await rm(dir, { recursive: true, force: true })
})

/**
 * A coordinator stand-in serving `blob` (and nothing else) in real 256 KiB frames;
 * with `cutFirst` it drops the first stream after two frames. Resolves with the
 * list the offset of every request is appended to.
 */
async function serveBlob(
  server: FleetHost,
  blob: Uint8Array,
  options: { cutFirst?: boolean; cutOnceOnDisk?: string } = {},
) {
  const sha256 = sha256Hex(blob)
  const offsets: number[] = []
  await handleFramed(server, PROTOCOLS.blob, async (fs) => {
    const req = decodeMessage(blobRequestSchema, await fs.readOne(), 'blob request', 4096)
    offsets.push(req.offset)
    if (req.sha256 !== sha256) {
      await fs.send(
        encodeMessage(blobResponseSchema, {
          ok: false,
          error: { code: 'not-found', message: 'no such blob' },
        }),
      )
      return
    }
    await fs.send(encodeMessage(blobResponseSchema, { ok: true, size: blob.byteLength }))
    const first = offsets.length === 1
    for (let at = req.offset; at < blob.byteLength; at += 256 * 1024) {
      await fs.send(blob.subarray(at, Math.min(at + 256 * 1024, blob.byteLength)))
      if (options.cutFirst === true && first && at >= 256 * 1024) {
        // Cut only once the client has bytes on disk: a reset can overtake data
        // still in flight, and the point is to resume from a non-zero offset.
        const partial = options.cutOnceOnDisk
        if (partial !== undefined)
          await waitFor(async () => ((await fileSize(partial)) ?? 0) > 0, 'the first bytes on disk')
        fs.abort(new Error('simulated cut'))
        return
      }
    }
  })
  return offsets
}

/** An agent host that knows where `server` is. */
async function clientOf(server: FleetHost): Promise<FleetHost> {
  const client = await host('agent')
  await client.peerStore.merge(server.peerId, { multiaddrs: server.getMultiaddrs() })
  return client
}

describe('coordinator blob fetcher', () => {
  it('resumes an interrupted download from the bytes already on disk', async () => {
    const blob = new Uint8Array(randomBytes(3 * 256 * 1024 + 123))
    const sha256 = sha256Hex(blob)
    const server = await host('coordinator')
    const dest = join(dir, 'blob.part')
    // Drops the first stream half way.
    const offsets = await serveBlob(server, blob, { cutFirst: true, cutOnceOnDisk: dest })
    const client = await clientOf(server)
    const progress: number[] = []
    const fetcher = coordinatorBlobFetcher(client, server.peerId, { initialBackoffMs: 10 })
    await fetcher.fetch(
      sha256,
      blob.byteLength,
      [{ kind: 'coordinator' }],
      dest,
      (d) => progress.push(d),
      AbortSignal.timeout(20_000),
    )
    expect(sha256Hex(await readFile(dest))).toBe(sha256)
    expect(offsets).toHaveLength(2)
    expect(offsets[0]).toBe(0)
    expect(offsets[1]).toBeGreaterThan(0)
    expect(progress.at(-1)).toBe(blob.byteLength)
  })

  it('continues a partial file left by an earlier run, and fails at once when the blob is unknown', async () => {
    const blob = new Uint8Array(randomBytes(1000))
    const sha256 = sha256Hex(blob)
    const server = await host('coordinator')
    const offsets = await serveBlob(server, blob)
    const client = await clientOf(server)
    const dest = join(dir, 'blob.part')
    await writeFile(dest, blob.subarray(0, 400))
    const fetcher = coordinatorBlobFetcher(client, server.peerId)
    await fetcher.fetch(
      sha256,
      blob.byteLength,
      [{ kind: 'coordinator' }],
      dest,
      () => {},
      AbortSignal.timeout(10_000),
    )
    expect(offsets).toEqual([400])
    expect(Buffer.compare(await readFile(dest), Buffer.from(blob))).toBe(0)

    const missing = 'f'.repeat(64)
    const err = await fetcher
      .fetch(
        missing,
        10,
        [{ kind: 'coordinator' }],
        join(dir, 'other.part'),
        () => {},
        AbortSignal.timeout(10_000),
      )
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActivatorError)
    expect((err as ActivatorError).message).toContain('not-found')
  })

  it('hashes what it writes into the digest it is given, across a cut and from a partial file', async () => {
    const blob = new Uint8Array(randomBytes(3 * 256 * 1024 + 77))
    const sha256 = sha256Hex(blob)
    const server = await host('coordinator')
    const dest = join(dir, 'blob.part')
    await writeFile(dest, blob.subarray(0, 1000))
    await serveBlob(server, blob, { cutFirst: true, cutOnceOnDisk: dest })
    const client = await clientOf(server)
    const digest = new FileDigest(dest)
    await coordinatorBlobFetcher(client, server.peerId, { initialBackoffMs: 10 }).fetch(
      sha256,
      blob.byteLength,
      [{ kind: 'coordinator' }],
      dest,
      () => {},
      AbortSignal.timeout(20_000),
      digest,
    )
    // Every byte went through the digest as it was written; none is left to read back.
    expect(digest.bytes).toBe(blob.byteLength)
    expect(await digest.digest()).toBe(sha256)
  })
})
