/**
 * The coordinator blob fetcher over real libp2p hosts on loopback: a download cut
 * off half way resumes from the bytes already on disk, and definitive refusals
 * fail at once.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { coordinatorBlobFetcher } from '../../agent/blob-fetcher.ts'
import { ActivatorError } from '../../agent/profile-activator.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { decodeMessage, encodeMessage } from '../../protocol/codec.ts'
import { handleFramed } from '../../protocol/framing.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { blobRequestSchema, blobResponseSchema } from '../../protocol/messages.ts'

const hosts: FleetHost[] = []
let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-blob-'))
})
afterEach(async () => {
  for (const h of hosts.splice(0).reverse()) await h.stop()
  await rm(dir, { recursive: true, force: true })
})

async function host(role: 'coordinator' | 'agent'): Promise<FleetHost> {
  const h = await createHost({
    role,
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
  })
  hosts.push(h)
  return h
}

describe('coordinator blob fetcher', () => {
  it('resumes an interrupted download from the bytes already on disk', async () => {
    const blob = new Uint8Array(randomBytes(3 * 256 * 1024 + 123))
    const sha256 = createHash('sha256').update(blob).digest('hex')
    const server = await host('coordinator')
    const offsets: number[] = []
    // A coordinator stand-in that serves real frames but drops the first stream half way.
    await handleFramed(server, PROTOCOLS.blob, async (fs) => {
      const req = decodeMessage(blobRequestSchema, await fs.readOne(), 'blob request', 4096)
      offsets.push(req.offset)
      await fs.send(encodeMessage(blobResponseSchema, { ok: true, size: blob.byteLength }))
      const first = offsets.length === 1
      for (let at = req.offset; at < blob.byteLength; at += 256 * 1024) {
        await fs.send(blob.subarray(at, Math.min(at + 256 * 1024, blob.byteLength)))
        if (first && at >= 256 * 1024) {
          fs.abort(new Error('simulated cut'))
          return
        }
      }
    })
    const client = await host('agent')
    await client.peerStore.merge(server.peerId, { multiaddrs: server.getMultiaddrs() })
    const dest = join(dir, 'blob.part')
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
    expect(
      createHash('sha256')
        .update(await readFile(dest))
        .digest('hex'),
    ).toBe(sha256)
    expect(offsets).toHaveLength(2)
    expect(offsets[0]).toBe(0)
    expect(offsets[1]).toBeGreaterThan(0)
    expect(progress.at(-1)).toBe(blob.byteLength)
  })

  it('continues a partial file left by an earlier run, and fails at once when the blob is unknown', async () => {
    const blob = new Uint8Array(randomBytes(1000))
    const sha256 = createHash('sha256').update(blob).digest('hex')
    const server = await host('coordinator')
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
      await fs.send(blob.subarray(req.offset))
    })
    const client = await host('agent')
    await client.peerStore.merge(server.peerId, { multiaddrs: server.getMultiaddrs() })
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
})
