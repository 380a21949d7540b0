/**
 * The SHA-256 of a download file kept up to date as chunks are appended: it
 * reads from disk only the bytes it was not handed, and starts over when the
 * writer does.
 */
import { randomBytes } from 'node:crypto'
import { appendFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { FileDigest } from '../../agent/file-digest.ts'
import { sha256Hex } from '../../lib/hash.ts'
import { removeDir, tempDir } from './fixtures.ts'

describe('file digest', () => {
  let dir: string
  let file: string
  beforeEach(async () => {
    dir = await tempDir('fm-digest-')
    file = join(dir, 'blob.part')
  })
  afterEach(async () => {
    await removeDir(dir)
  })

  it('follows appended chunks, hashing the prefix already on disk once', async () => {
    const bytes = new Uint8Array(randomBytes(300_000))
    await writeFile(file, bytes.subarray(0, 100_000))
    const digest = new FileDigest(file)
    await digest.seek(100_000)
    expect(digest.bytes).toBe(100_000)
    for (const [from, to] of [
      [100_000, 250_000],
      [250_000, 300_000],
    ] as const) {
      await appendFile(file, bytes.subarray(from, to))
      digest.update(bytes.subarray(from, to))
    }
    // Seeking to where it already is reads nothing.
    await digest.seek(300_000)
    expect(await digest.digest()).toBe(sha256Hex(bytes))
  })

  it('reads what a writer appended without handing it over, and starts over when the file is rewritten', async () => {
    const bytes = new Uint8Array(randomBytes(50_000))
    await writeFile(file, bytes.subarray(0, 20_000))
    const digest = new FileDigest(file)
    await appendFile(file, bytes.subarray(20_000))
    expect(await digest.digest()).toBe(sha256Hex(bytes))
    expect(digest.bytes).toBe(50_000)

    const other = new Uint8Array(randomBytes(10_000))
    await digest.seek(0)
    await writeFile(file, other)
    digest.update(other)
    expect(await digest.digest()).toBe(sha256Hex(other))
  })

  it('refuses to seek past the end of the file', async () => {
    await writeFile(file, new Uint8Array(10))
    await expect(new FileDigest(file).seek(20)).rejects.toThrow(/has 10 bytes, fewer than the 20/)
  })
})
