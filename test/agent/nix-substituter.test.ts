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

  async function start(
    nars: FakeNar[],
    fetchNar = source(nars),
    options: { prefetch?: FakeNar[]; width?: number } = {},
  ): Promise<NixSubstituter> {
    cache = await NixSubstituter.start({
      narinfos: nars.map((n) => n.info),
      narDir,
      fetchNar,
      ...(options.prefetch !== undefined ? { prefetch: options.prefetch.map((n) => n.info) } : {}),
      ...(options.width !== undefined ? { prefetchConcurrency: options.width } : {}),
      onProgress: (done) => progress.push(done),
      onFailure: (f) => failures.push(f),
    })
    return cache
  }

  /** A NAR source whose downloads wait until released, recording how many run at once. */
  function gatedSource(nars: FakeNar[]) {
    const gates = new Map<string, () => void>()
    const state = { running: 0, maxRunning: 0, signals: [] as AbortSignal[] }
    const inner = source(nars)
    const fetchNar: NixCacheSource['fetchNar'] = async (sha256, size, dest, onProgress, signal, digest) => {
      state.running += 1
      state.maxRunning = Math.max(state.maxRunning, state.running)
      state.signals.push(signal)
      try {
        await new Promise<void>((resolve, reject) => {
          gates.set(sha256, resolve)
          signal.addEventListener('abort', () => reject(signal.reason), { once: true })
        })
        await inner(sha256, size, dest, onProgress, signal, digest)
      } finally {
        state.running -= 1
      }
    }
    const release = (nar: FakeNar) => waitFor(() => gates.get(nar.sha256), `${nar.info.storePath} started`)
    return { fetchNar, state, gates, release: async (nar: FakeNar) => (await release(nar))() }
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
    expect(c.stats).toEqual({ narsServed: 2, bytesServed: 200_000 })
    expect(c.failure).toBe(null)
    await c.removeDownloads()
    expect(await readdir(narDir)).toEqual([])
  })

  it('counts a NAR the client has in full even when stopped at once, as the activator stops it when Nix exits', async () => {
    const nars = Array.from({ length: 8 }, (_, i) => fakeNar(`stop-${i}`, 300_000))
    const c = await start(nars)
    // Nix reads the last byte and exits, and the activator stops the cache straight
    // away: the server's own write callbacks may not have run yet.
    for (const nar of nars) {
      const res = await fetch(`${c.url}/nar/${nar.sha256}.nar`)
      expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(nar.sha256)
    }
    await c.stop()
    expect(c.stats).toEqual({ narsServed: 8, bytesServed: 8 * 300_000 })
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

  it('prefetches the planned NARs a few at a time, in order, before Nix asks', async () => {
    const nars = ['a', 'b', 'c', 'd', 'e'].map((n) => fakeNar(n, 5000))
    const gated = gatedSource(nars)
    const c = await start(nars, gated.fetchNar, { prefetch: nars, width: 2 })
    await waitFor(() => gated.state.running === 2, 'two prefetches running')
    expect(fetches).toEqual([])
    for (const nar of nars) await gated.release(nar)
    await waitFor(() => fetches.length === 5, 'all five downloaded')
    expect(fetches).toEqual(nars.map((n) => n.sha256))
    expect(gated.state.maxRunning).toBe(2)
    await waitFor(() => progress.at(-1) === 25_000, 'progress over all NARs')
    // Nix then gets them from disk, without another download.
    for (const nar of nars) {
      const res = await fetch(`${c.url}/nar/${nar.sha256}.nar`)
      expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(nar.sha256)
    }
    expect(fetches).toHaveLength(5)
    expect(c.failure).toBe(null)
  })

  it('starts a NAR Nix asks for at once when the prefetch has not reached it, and downloads it once', async () => {
    const nars = ['a', 'b', 'c'].map((n) => fakeNar(n))
    const gated = gatedSource(nars)
    const c = await start(nars, gated.fetchNar, { prefetch: nars, width: 1 })
    await waitFor(() => gated.gates.has((nars[0] as FakeNar).sha256), 'the first prefetch')
    const last = nars[2] as FakeNar
    const response = fetch(`${c.url}/nar/${last.sha256}.nar`)
    await gated.release(last)
    expect((await response).status).toBe(200)
    await gated.release(nars[0] as FakeNar)
    await gated.release(nars[1] as FakeNar)
    await waitFor(() => fetches.length === 3, 'the other two downloaded')
    expect(fetches.filter((f) => f === last.sha256)).toHaveLength(1)
  })

  it('fails the realisation from a failed prefetch, before Nix asks, with its reason', async () => {
    const good = fakeNar('good')
    const bad = fakeNar('bad')
    const c = await start(
      [good, bad],
      source([good, bad], (n) => (n === bad ? new Uint8Array(randomBytes(n.bytes.byteLength)) : n.bytes)),
      { prefetch: [bad, good] },
    )
    await waitFor(() => failures.length === 1, 'the failure reported')
    expect(failures[0]).toMatchObject({ code: 'artifact-mismatch', storePath: bad.info.storePath })
    expect(failures[0]?.message).toContain(`the NAR of ${bad.info.storePath} does not match its hash`)
    // Nix asking afterwards gets the answer at once; the other NAR is still served.
    expect((await fetch(`${c.url}/nar/${bad.sha256}.nar`)).status).toBe(500)
    expect((await fetch(`${c.url}/nar/${good.sha256}.nar`)).status).toBe(200)
    expect(fetches.filter((f) => f === bad.sha256)).toHaveLength(1)
  })

  it('cancels the prefetches in flight when stopped', async () => {
    const nars = ['a', 'b', 'c'].map((n) => fakeNar(n))
    const gated = gatedSource(nars)
    const c = await start(nars, gated.fetchNar, { prefetch: nars, width: 2 })
    await waitFor(() => gated.state.running === 2, 'two prefetches running')
    await c.stop()
    cache = undefined
    expect(gated.state.signals.every((s) => s.aborted)).toBe(true)
    expect(gated.state.running).toBe(0)
    // The third never started, and nothing was reported as a failure.
    expect(gated.gates.size).toBe(2)
    expect(failures).toEqual([])
    expect(c.failure).toBe(null)
  })

  it('downloads a resumed NAR again from the start when the bytes from before do not match', async () => {
    const nar = fakeNar('crashed', 50_000)
    await mkdir(narDir, { recursive: true })
    // What a power loss can leave: the right length, but bytes that never reached the disk.
    await writeFile(join(narDir, `${nar.sha256}.nar.part`), new Uint8Array(20_000))
    const c = await start([nar])
    const res = await fetch(`${c.url}/nar/${nar.sha256}.nar`)
    expect(res.status).toBe(200)
    expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(nar.sha256)
    expect(fetches).toEqual([nar.sha256, nar.sha256])
    expect(c.failure).toBe(null)
  })

  it('checks the hash the source computed while writing, without reading the NAR back', async () => {
    const nar = fakeNar('fed', 10_000)
    // The file gets the right bytes, the digest other ones: only the digest is believed.
    const c = await start([nar], async (_sha256, size, dest, onProgress, _signal, digest) => {
      fetches.push(nar.sha256)
      await appendFile(dest, nar.bytes)
      digest?.update(new Uint8Array(size))
      onProgress(size)
    })
    expect((await fetch(`${c.url}/nar/${nar.sha256}.nar`)).status).toBe(500)
    expect(c.failure?.code).toBe('artifact-mismatch')
  })

  it('answers nothing once stopped', async () => {
    const c = await start([fakeNar('x')])
    await c.stop()
    cache = undefined
    await expect(fetch(`${c.url}/nix-cache-info`)).rejects.toThrow()
  })
})
