/**
 * Blob uploads cannot hold the coordinator's disk or memory: a stalled upload is
 * aborted and its partial file deleted, pending uploads are capped per admin
 * key and in total, stale partial files go at start-up, and an upload
 * interrupted within the resume grace still resumes. Over real libp2p
 * connections to an in-process coordinator (the limits set small through its options).
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AdminClient } from '../../admin/client.ts'
import { loadAdminHome } from '../../admin/home.ts'
import { bytesSource, uploadBlob } from '../../admin/upload.ts'
import { type RunningCoordinator, startCoordinator } from '../../coordinator/daemon.ts'
import type { UploadLimits } from '../../coordinator/upload-quota.ts'
import { fileSize, sha256Hex } from '../../lib/index.ts'
import { uploadResult } from '../../protocol/index.ts'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let coordinator: RunningCoordinator | undefined
const clients: AdminClient[] = []

beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close()
  await coordinator?.stop()
  coordinator = undefined
  await fleet.stop()
})

const partialDir = () => join(fleet.coordState, 'blobs', 'partial')

async function start(uploads: Partial<UploadLimits>): Promise<void> {
  coordinator = await startCoordinator({
    stateDir: fleet.coordState,
    listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
    uploads,
  })
}

async function admin(): Promise<AdminClient> {
  const client = await AdminClient.connect(await loadAdminHome(fleet.home))
  clients.push(client)
  return client
}

/** Announces an upload and reads the coordinator's go-ahead; the stream stays open for the caller. */
async function announce(client: AdminClient, sha256: string, size: number) {
  const fs = await client.open({ op: 'upload-blob', sha256, size })
  const start = await client.readResult(fs, uploadResult)
  return { fs, start }
}

describe('a stalled upload', () => {
  it('is aborted with a clear error and its partial file is deleted', async () => {
    await start({ idleTimeoutMs: 300, resumeGraceMs: 0 })
    const client = await admin()
    const sha = sha256Hex(randomBytes(32))
    const { fs, start: go } = await announce(client, sha, 1024 * 1024)
    expect(go).toEqual({ offset: 0, complete: false })
    await fs.send(randomBytes(1000))
    // …and nothing more: the coordinator gives up on it
    await expect(client.readResult(fs, uploadResult)).rejects.toMatchObject({
      code: 'stalled',
      message: expect.stringMatching(/sent no data for 0\.3 s/),
    })
    expect(await fileSize(join(partialDir(), sha))).toBeUndefined()
  })

  it('keeps its bytes within the resume grace, and the retry resumes and completes', async () => {
    await start({ idleTimeoutMs: 300 })
    const client = await admin()
    const bytes = randomBytes(300_000)
    const sha = sha256Hex(bytes)
    const { fs } = await announce(client, sha, bytes.byteLength)
    await fs.send(bytes.subarray(0, 100_000))
    await expect(client.readResult(fs, uploadResult)).rejects.toMatchObject({ code: 'stalled' })
    const progress: string[] = []
    expect(await uploadBlob(client, bytesSource(bytes), (m) => progress.push(m))).toBe('uploaded')
    expect(progress[0]).toBe('resuming upload at 100000 bytes')
    expect(await fileSize(join(fleet.coordState, 'blobs', sha))).toBe(bytes.byteLength)
  })
})

describe('pending upload caps', () => {
  it('refuses an upload past the per-admin cap, naming the cap and what is pending', async () => {
    await start({ perAdminBytes: 1024 * 1024, totalBytes: 64 * 1024 * 1024 })
    const client = await admin()
    const first = await announce(client, sha256Hex(randomBytes(8)), 800 * 1024)
    expect(first.start.complete).toBe(false)
    const refused = announce(client, sha256Hex(randomBytes(8)), 800 * 1024)
    await expect(refused).rejects.toMatchObject({
      code: 'quota-admin',
      message: expect.stringMatching(
        /per-admin cap on pending uploads of 1\.0 MiB: this admin key has 1 upload\(s\) of 800\.0 KiB pending/,
      ),
    })
  })

  it('refuses an upload past the total cap', async () => {
    await start({ perAdminBytes: 64 * 1024 * 1024, totalBytes: 1024 * 1024 })
    const client = await admin()
    await announce(client, sha256Hex(randomBytes(8)), 600 * 1024)
    await expect(announce(client, sha256Hex(randomBytes(8)), 600 * 1024)).rejects.toMatchObject({
      code: 'quota-total',
      message: expect.stringMatching(/cap on pending uploads of 1\.0 MiB: 1 upload\(s\)/),
    })
  })
})

describe('start-up', () => {
  it('deletes partial files older than the resume grace and keeps younger ones', async () => {
    await mkdir(partialDir(), { recursive: true })
    const stale = sha256Hex(randomBytes(8))
    const fresh = sha256Hex(randomBytes(8))
    await writeFile(join(partialDir(), stale), randomBytes(100))
    await writeFile(join(partialDir(), fresh), randomBytes(100))
    await writeFile(join(partialDir(), 'junk.tmp'), 'x')
    const anHourAgo = new Date(Date.now() - 3_600_000)
    await utimes(join(partialDir(), stale), anHourAgo, anHourAgo)
    await start({ resumeGraceMs: 10 * 60_000 })
    expect(await readdir(partialDir())).toEqual([fresh])
  })
})
