/**
 * The loopback binary cache the local Nix substitutes through, spoken to over
 * HTTP as Nix speaks to it, with a stand-in NAR source: what it serves, what it
 * refuses, and how a NAR that cannot be served fails.
 */
import { randomBytes } from 'node:crypto'
import { appendFile, mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { NixCacheSource } from '../../agent/nix-cache-client.ts'
import { NixSubstituter, type SubstituterFailure } from '../../agent/nix-substituter.ts'
import { fileSize } from '../../lib/files.ts'
import { sha256Hex } from '../../lib/hash.ts'
import { parseNarInfo } from '../../protocol/narinfo.ts'
import { removeDir, tempDir, waitFor } from './fixtures.ts'
import { type FakeNar, fakeNar } from './nix-fixtures.ts'

describe('nix substituter', () => {
  let dir: string
  let narDir: string
  let cache: NixSubstituter | undefined
  let fetches: string[]
  let failures: SubstituterFailure[]
  let progress: number[]
  beforeEach(async () => {
    dir = await tempDir('fm-subst-')
    narDir = join(dir, 'nars')
    fetches = []
    failures = []
    progress = []
  })
  afterEach(async () => {
    await cache?.stop()
    cache = undefined
    await removeDir(dir)
  })

  /** A NAR source that appends `serve(nar)` from the bytes already in dest on. */
  function source(
    nars: FakeNar[],
    serve: (nar: FakeNar) => Uint8Array = (n) => n.bytes,
  ): NixCacheSource['fetchNar'] {
    return async (sha256, size, dest, onProgress) => {
      const nar = nars.find((n) => n.sha256 === sha256)
      if (nar === undefined) throw new Error(`no NAR ${sha256}`)
      fetches.push(sha256)
      const offset = (await fileSize(dest)) ?? 0
      await appendFile(dest, serve(nar).subarray(offset, size))
      onProgress(size)
    }
  }

  async function start(nars: FakeNar[], fetchNar = source(nars)): Promise<NixSubstituter> {
    cache = await NixSubstituter.start({
      narinfos: nars.map((n) => n.info),
      narDir,
      fetchNar,
      onProgress: (done) => progress.push(done),
      onFailure: (f) => failures.push(f),
    })
    return cache
  }

  it('serves nix-cache-info, re-serialised narinfos and 404 for anything else', async () => {
    const nar = fakeNar('hello')
    const c = await start([nar])
    const info = await fetch(`${c.url}/nix-cache-info`)
    expect(info.status).toBe(200)
    expect(await info.text()).toBe('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 0\n')

    const res = await fetch(`${c.url}/${nar.hash}.narinfo`)
    expect(res.status).toBe(200)
    const served = parseNarInfo(await res.text())
    expect(served).toEqual({
      ...nar.info,
      url: `nar/${nar.sha256}.nar`,
      compression: 'none',
      fileHash: nar.info.narHash,
      fileSize: nar.info.narSize,
    })

    const other = fakeNar('other')
    for (const path of [`/${other.hash}.narinfo`, `/nar/${other.sha256}.nar`, '/x', `/nar/${nar.hash}.nar`]) {
      expect((await fetch(`${c.url}${path}`)).status, path).toBe(404)
    }
    for (const method of ['PUT', 'POST', 'DELETE']) {
      const r = await fetch(`${c.url}/${nar.hash}.narinfo`, {
        method,
        body: method === 'DELETE' ? null : 'x',
      })
      expect(r.status, method).toBe(405)
    }
    expect(fetches).toEqual([])
  })

  it('downloads a NAR on request, resuming a partial one, verifies it and streams it with its length', async () => {
    const nar = fakeNar('big', 100_000)
    await mkdir(narDir, { recursive: true })
    await writeFile(join(narDir, `${nar.sha256}.nar.part`), nar.bytes.subarray(0, 40_000))
    const c = await start([nar])
    const res = await fetch(`${c.url}/nar/${nar.sha256}.nar`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-length')).toBe('100000')
    expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(nar.sha256)
    expect(progress[0]).toBe(40_000)
    expect(progress.at(-1)).toBe(100_000)
    // A second request is served from the verified file.
    const again = await fetch(`${c.url}/nar/${nar.sha256}.nar`)
    expect(sha256Hex(new Uint8Array(await again.arrayBuffer()))).toBe(nar.sha256)
    expect(fetches).toEqual([nar.sha256])
    // Counted once the server has finished writing, which can be just after the client has it all.
    await waitFor(() => c.stats.narsServed === 2, 'both NARs counted')
    expect(c.stats).toEqual({ narsServed: 2, bytesServed: 200_000 })
    expect(c.failure).toBe(null)
    await c.removeDownloads()
    expect(await readdir(narDir)).toEqual([])
  })

  it('fails a NAR whose bytes do not match its hash, once, and remembers why', async () => {
    const good = fakeNar('good')
    const bad = fakeNar('bad')
    const c = await start(
      [good, bad],
      source([good, bad], (n) => (n === bad ? new Uint8Array(randomBytes(n.bytes.byteLength)) : n.bytes)),
    )
    const res = await fetch(`${c.url}/nar/${bad.sha256}.nar`)
    expect(res.status).toBe(500)
    expect(await res.text()).toContain(`the NAR of ${bad.info.storePath} does not match its hash`)
    expect(c.failure).toMatchObject({ code: 'artifact-mismatch', storePath: bad.info.storePath })
    expect(failures).toHaveLength(1)
    expect(await readdir(narDir)).toEqual([])
    // Nix retries: answered at once, without downloading again.
    expect((await fetch(`${c.url}/nar/${bad.sha256}.nar`)).status).toBe(500)
    expect(fetches).toEqual([bad.sha256])
    // Other NARs are still served.
    expect((await fetch(`${c.url}/nar/${good.sha256}.nar`)).status).toBe(200)
    expect(failures).toHaveLength(1)
  })

  it('says the disk is full when writing a NAR fails with ENOSPC', async () => {
    const nar = fakeNar('full')
    const c = await start([nar], async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })
    })
    expect((await fetch(`${c.url}/nar/${nar.sha256}.nar`)).status).toBe(500)
    expect(c.failure?.code).toBe('no-space')
    expect(c.failure?.message).toContain(`no space left to download the NAR of ${nar.info.storePath}`)
  })

  it('answers nothing once stopped', async () => {
    const c = await start([fakeNar('x')])
    await c.stop()
    cache = undefined
    await expect(fetch(`${c.url}/nix-cache-info`)).rejects.toThrow()
  })
})
