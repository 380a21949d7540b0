import { lstat, mkdir, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { type Activator, ActivatorError } from '../../agent/activator.ts'
import { httpBlobFetcher, routeBlobFetcher } from '../../agent/blob-fetcher.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { makeTar, sh } from '../../testkit/archives.ts'
import { type BlobServer, makeFleet, removeDir, servedPayload, startBlobServer, tempDir } from './fixtures.ts'

const fleet = makeFleet()
const never = new AbortController().signal

describe('profile activator', () => {
  let server: BlobServer
  let dir: string
  let root: string
  let activator: Activator
  beforeAll(async () => {
    server = await startBlobServer()
  })
  afterAll(() => server.close())
  beforeEach(async () => {
    dir = await tempDir()
    root = join(dir, 'profile')
    activator = profileActivator({ root, fetcher: httpBlobFetcher(), fetchAttempts: 1 })
  })
  afterEach(() => removeDir(dir))

  async function install(
    name: string,
    files: Record<string, ReturnType<typeof sh> | string> = { 'app.txt': name },
  ) {
    const archive = await makeTar(dir, files)
    const manifest = fleet.manifest({ generation: name, payload: servedPayload(server, archive) })
    const artifact = await activator.fetch(manifest, () => {}, never)
    const gen = await activator.prepare(manifest, artifact)
    return { manifest, gen }
  }

  it('downloads, resumes with a Range request, and verifies the hash', async () => {
    const archive = await makeTar(dir, { 'big.bin': 'x'.repeat(200_000) + Math.random() })
    const manifest = fleet.manifest({ payload: servedPayload(server, archive) })
    const half = Math.floor(archive.size / 2)
    await mkdir(join(root, 'downloads'), { recursive: true })
    await writeFile(join(root, 'downloads', `${archive.sha256}.part`), archive.bytes.subarray(0, half))
    const progress: number[] = []
    const artifact = await activator.fetch(manifest, (p) => progress.push(p.done), never)
    expect(new Uint8Array(await readFile(artifact))).toEqual(archive.bytes)
    expect(server.requests.at(-1)).toEqual({ sha: archive.sha256, range: `bytes=${half}-` })
    expect(progress[0]).toBe(half)
    expect(progress.at(-1)).toBe(archive.size)
    // A second fetch finds the verified artifact and does not download again.
    const before = server.requests.length
    expect(await activator.fetch(manifest, () => {}, never)).toBe(artifact)
    expect(server.requests.length).toBe(before)
  })

  it('deletes a download whose hash does not match and says so', async () => {
    const archive = await makeTar(dir, { 'a.txt': 'a' })
    const payload = servedPayload(server, archive)
    if (payload.kind !== 'archive') throw new Error('unreachable')
    // The source serves the real bytes, but the manifest names another hash.
    const manifest = fleet.manifest({ payload: { ...payload, sha256: 'f'.repeat(64) } })
    const err = await activator.fetch(manifest, () => {}, never).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActivatorError)
    expect((err as ActivatorError).code).toBe('artifact-mismatch')
    expect(await readdir(join(root, 'downloads'))).toEqual([])
  })

  it('fails a download no source can serve', async () => {
    const manifest = fleet.manifest({
      payload: {
        kind: 'archive',
        sha256: 'e'.repeat(64),
        size: 10,
        sources: [{ kind: 'http', url: server.url('e'.repeat(64)) }],
      },
    })
    const err = await activator.fetch(manifest, () => {}, never).catch((e: unknown) => e)
    expect((err as ActivatorError).code).toBe('download-failed')
    expect((err as Error).message).toMatch(/HTTP 404/)
  })

  it('routes sources to the fetcher for their kind', async () => {
    const archive = await makeTar(dir, { 'a.txt': 'a' })
    const payload = servedPayload(server, archive)
    if (payload.kind !== 'archive') throw new Error('unreachable')
    const calls: string[] = []
    const fetcher = routeBlobFetcher({
      coordinator: {
        async fetch() {
          calls.push('coordinator')
          throw new Error('coordinator unreachable')
        },
      },
      http: httpBlobFetcher(),
    })
    const routed = profileActivator({ root, fetcher, fetchAttempts: 1 })
    const manifest = fleet.manifest({
      payload: { ...payload, sources: [{ kind: 'coordinator' }, ...payload.sources] },
    })
    await routed.fetch(manifest, () => {}, never)
    expect(calls).toEqual(['coordinator'])
  })

  it('unpacks .tar.gz and plain .tar into numbered generations, idempotently', async () => {
    const { manifest, gen } = await install('web-1')
    expect(gen).toMatchObject({ id: '1-web-1', name: 'web-1', manifestId: manifest.id })
    expect(await readFile(join(gen.path, 'app.txt'), 'utf8')).toBe('web-1')
    // prepare again (as after a crash) returns the same generation
    expect((await activator.prepare(manifest, '/nonexistent')).id).toBe('1-web-1')

    const plain = await makeTar(dir, { 'app.txt': 'plain' }, { gzip: false })
    const m2 = fleet.manifest({ generation: 'web-2', payload: servedPayload(server, plain) })
    const gen2 = await activator.prepare(m2, await activator.fetch(m2, () => {}, never))
    expect(gen2.id).toBe('2-web-2')
    expect((await activator.list()).map((g) => g.id)).toEqual(['1-web-1', '2-web-2'])
    expect((await activator.previousOf(gen2))?.id).toBe('1-web-1')
  })

  it('refuses archives with ".." or absolute members before unpacking anything', async () => {
    await writeFile(join(dir, 'evil'), 'pwned')
    for (const member of ['../evil', join(dir, 'evil')]) {
      const archive = await makeTar(dir, {}, { extraArgs: ['-P', member] })
      const manifest = fleet.manifest({ payload: servedPayload(server, archive) })
      const artifact = await activator.fetch(manifest, () => {}, never)
      const err = await activator.prepare(manifest, artifact).catch((e: unknown) => e)
      expect((err as ActivatorError).code).toBe('unsafe-archive')
      expect((err as Error).message).toMatch(/climbs out|absolute path/)
      expect(await readdir(join(root, 'generations'))).toEqual([])
    }
    expect(await readFile(join(dir, 'evil'), 'utf8')).toBe('pwned')
  })

  it('refuses something that is not an archive', async () => {
    const bytes = new TextEncoder().encode('just some text, not a tar archive')
    const { sha256, size, url } = server.add(bytes)
    const manifest = fleet.manifest({
      payload: { kind: 'archive', sha256, size, sources: [{ kind: 'http', url }] },
    })
    const artifact = await activator.fetch(manifest, () => {}, never)
    const err = await activator.prepare(manifest, artifact).catch((e: unknown) => e)
    expect((err as ActivatorError).code).toBe('bad-archive')
  })

  it('switches the current symlink atomically and runs the activate hook', async () => {
    expect(await activator.current()).toBeNull()
    const log = join(dir, 'hook.log')
    const hook = sh(`echo "$FLEETMESH_GENERATION|$FLEETMESH_PREVIOUS|$(pwd)" >> ${log}`)
    const a = (await install('a', { activate: hook })).gen
    const b = (await install('b', { activate: hook })).gen
    await activator.switchTo(a)
    await activator.activate(a, null)
    await activator.switchTo(b)
    await activator.activate(b, a)
    expect(await readlink(join(root, 'current'))).toBe('generations/2-b')
    expect((await lstat(join(root, 'current'))).isSymbolicLink()).toBe(true)
    expect((await activator.current())?.id).toBe('2-b')
    expect((await readFile(log, 'utf8')).trim().split('\n')).toEqual([
      `a||${a.path}`,
      `b|${a.path}|${b.path}`,
    ])
    expect((await readdir(root)).filter((n) => n.startsWith('.tmp-'))).toEqual([])
    await activator.switchTo(null)
    expect(await activator.current()).toBeNull()
  })

  it('turns a failing activate hook into activation-failed with its output', async () => {
    const { gen } = await install('bad', { activate: sh('echo cannot start service >&2; exit 4') })
    const err = await activator.activate(gen, null).catch((e: unknown) => e)
    expect((err as ActivatorError).code).toBe('activation-failed')
    expect((err as Error).message).toMatch(/status 4.*cannot start service/)
    // A non-executable file named activate is not a hook.
    const { gen: plain } = await install('plain', { activate: 'exit 1' })
    await activator.activate(plain, null)
  })

  it('keeps the newest generations plus current and protected ones', async () => {
    const gens = []
    for (let i = 1; i <= 8; i++) gens.push((await install(`g${i}`)).gen)
    await activator.switchTo(gens[0]!)
    const removed = await activator.gc(5, [gens[1]!])
    expect(removed).toEqual(['3-g3'])
    expect((await activator.list()).map((g) => g.id)).toEqual([
      '1-g1',
      '2-g2',
      '4-g4',
      '5-g5',
      '6-g6',
      '7-g7',
      '8-g8',
    ])
    expect((await stat(join(root, 'generations'))).isDirectory()).toBe(true)
    expect(await readdir(join(root, 'generations'))).toHaveLength(7)
  })
})
