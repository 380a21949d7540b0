// Pushing closures from the admin's Nix store: path-info parsing, NAR dumps,
// the narinfos built from them, and the push itself against a stand-in for
// the coordinator's cache. The store side runs REAL Nix (skipped where there
// is none); the coordinator side lands separately and is end-to-end tested.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseNixMap } from '../../admin/nix-map.ts'
import {
  buildNarInfo,
  type NixCacheTarget,
  NixPushError,
  type PushProgress,
  pushClosures,
  signForTrust,
} from '../../admin/nix-push.ts'
import { dumpNar, type LocalPathInfo, NixStoreError, pathInfos, storeClosure } from '../../admin/nix-store.ts'
import type { UploadSource } from '../../admin/upload.ts'
import { loadNixSigningKey, NixPublicKey, NixSigningKey } from '../../keys/index.ts'
import { batches, UsageError } from '../../lib/index.ts'
import {
  checkNarInfoSignature,
  formatNarInfo,
  type NarInfo,
  nixSha256,
  parseNarInfo,
  STORE_DIR,
} from '../../protocol/index.ts'
import { buildFakeSystem, closureOf, nixCacheKey, nixEnv, nixUnavailable } from '../../testkit/nix/index.ts'

const PATH_A = '/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-a'

function expectUsageError(fn: () => unknown, ...fragments: string[]): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(UsageError)
  for (const f of fragments) expect((caught as Error).message).toContain(f)
}

describe('the --nix-map file', () => {
  it('maps machine names to store paths, sorted by machine', () => {
    const map = parseNixMap(JSON.stringify({ 'edge-2': PATH_A, 'edge-1': PATH_A }), 'm.json')
    expect([...map]).toEqual([
      ['edge-1', PATH_A],
      ['edge-2', PATH_A],
    ])
  })

  it('refuses bad files with messages that name the file and the entry', () => {
    expectUsageError(() => parseNixMap('{"edge-1": ', 'm.json'), 'm.json is not JSON')
    expectUsageError(
      () => parseNixMap(`["${PATH_A}"]`, 'm.json'),
      'must be a JSON object mapping machine names',
    )
    expectUsageError(() => parseNixMap('{}', 'm.json'), 'names no machines')
    expectUsageError(
      () => parseNixMap(JSON.stringify({ 'Edge 1': PATH_A }), 'm.json'),
      'm.json',
      '"Edge 1" is not a machine name',
    )
    expectUsageError(
      () => parseNixMap(JSON.stringify({ 'edge-1': '/tmp/result' }), 'm.json'),
      '"edge-1": "/tmp/result" is not a /nix/store/',
    )
    expectUsageError(() => parseNixMap(JSON.stringify({ 'edge-1': 7 }), 'm.json'), '"edge-1": 7 is not')
  })
})

describe('request batches', () => {
  it('respects both the count and the byte budget, and never drops or reorders', () => {
    const texts = Array.from({ length: 10 }, (_, i) => `${i}`.padEnd(100, 'x'))
    expect(batches(texts, { items: 4, bytes: 10_000 }).map((b) => b.length)).toEqual([4, 4, 2])
    expect(batches(texts, { items: 100, bytes: 250 }).map((b) => b.length)).toEqual([2, 2, 2, 2, 2])
    expect(batches(texts, { items: 3, bytes: 250 }).flat()).toEqual(texts)
    // One text larger than the budget still goes, alone.
    expect(batches(['y'.repeat(500), 'z'], { items: 10, bytes: 100 })).toEqual([['y'.repeat(500)], ['z']])
    expect(batches([], { items: 3, bytes: 10 })).toEqual([])
  })
})

describe('narinfos built from local path info', () => {
  const info: LocalPathInfo = {
    path: PATH_A,
    narSha256: createHash('sha256').update('nar').digest('hex'),
    narSize: 1234,
    references: ['b9r4p5prkj7lzfd1877wk11c9c730mdq-dep-b', PATH_A.slice(STORE_DIR.length + 1)],
    deriver: 'c9r4p5prkj7lzfd1877wk11c9c730mdq-nixos-system-a.drv',
    signatures: [],
    ca: null,
  }

  it('name the NAR by its hex SHA-256, uncompressed, with FileHash = NarHash', () => {
    const n = buildNarInfo(info)
    expect(n.url).toBe(`nar/${info.narSha256}.nar`)
    expect(n.compression).toBe('none')
    expect(n.fileHash).toBe(nixSha256(info.narSha256))
    expect(n.narHash).toBe(n.fileHash)
    expect(n.fileSize).toBe(1234)
    expect(parseNarInfo(formatNarInfo(n))).toEqual(n)
  })

  it('are signed unless a trusted key signed them already; unsigned CA paths are signed too', () => {
    const admin = NixSigningKey.generate('fleet-cache-1')
    const other = NixSigningKey.generate('upstream-1')
    const signedByOther = signForTrust(buildNarInfo(info), [other.publicKey], other).narinfo
    const kept = signForTrust(signedByOther, [other.publicKey, admin.publicKey], admin)
    expect(kept.signed).toBe(false)
    expect(kept.narinfo.sigs).toEqual(signedByOther.sigs)
    const resigned = signForTrust(signedByOther, [admin.publicKey], admin)
    expect(resigned.signed).toBe(true)
    expect(checkNarInfoSignature(resigned.narinfo, [admin.publicKey]).ok).toBe(true)
    const ca = signForTrust({ ...buildNarInfo(info), ca: 'fixed:r:sha256:abc' }, [admin.publicKey], admin)
    expect(ca.signed).toBe(true)
  })

  it('without a key, say to run "fleetmesh nix keygen"', () => {
    expect(() => signForTrust(buildNarInfo(info), [], undefined)).toThrow(/fleetmesh nix keygen/)
  })
})

/** Records what a push sends to the coordinator's cache; stands in for it until its side is tested end to end. */
class StandInCache implements NixCacheTarget {
  readonly calls: string[] = []
  readonly uploaded = new Map<string, Uint8Array>()
  readonly narinfos: NarInfo[] = []
  readonly #has: ReadonlySet<string>
  constructor(has: ReadonlySet<string>) {
    this.#has = has
  }

  async nixMissing(storePaths: readonly string[]): Promise<string[]> {
    this.calls.push(`missing ${storePaths.length}`)
    return storePaths.filter((p) => !this.#has.has(p))
  }

  async nixPut(texts: readonly string[]) {
    for (const text of texts) {
      const n = parseNarInfo(text)
      // A narinfo must never name a NAR the cache does not hold yet.
      expect(
        this.uploaded.has((n.url.match(/^nar\/([0-9a-f]{64})\.nar$/) as RegExpMatchArray)[1] as string),
      ).toBe(true)
      this.narinfos.push(n)
    }
    this.calls.push(`put ${texts.length}`)
    return { stored: texts.length, alreadyHad: 0 }
  }

  async uploadNar(source: UploadSource, onSent: (bytes: number) => void) {
    const parts: Uint8Array[] = []
    let sent = 0
    for await (const chunk of source.chunks(0)) {
      parts.push(chunk)
      sent += chunk.byteLength
      onSent(sent)
    }
    const bytes = Buffer.concat(parts)
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(source.sha256)
    expect(bytes.byteLength).toBe(source.size)
    this.uploaded.set(source.sha256, bytes)
    this.calls.push(`upload ${source.sha256.slice(0, 8)}`)
    return 'uploaded' as const
  }
}

/**
 * A cache whose first `workers` uploads wait for each other (a barrier), counting
 * how many run at once; the `failAt`-th upload fails once they all have started.
 * The closure must hold at least `workers` paths.
 */
class SlowCache extends StandInCache {
  running = 0
  maxRunning = 0
  started = 0
  readonly #workers: number
  readonly #failAt: number | undefined
  readonly #allStarted = Promise.withResolvers<void>()
  constructor(has: ReadonlySet<string>, workers: number, failAt?: number) {
    super(has)
    this.#workers = workers
    this.#failAt = failAt
  }

  override async uploadNar(source: UploadSource, onSent: (bytes: number) => void) {
    this.started += 1
    const nth = this.started
    this.running += 1
    this.maxRunning = Math.max(this.maxRunning, this.running)
    if (nth === this.#workers) this.#allStarted.resolve()
    try {
      if (nth <= this.#workers) await this.#allStarted.promise
      if (nth === this.#failAt) throw new Error('upload stream reset')
      return await super.uploadNar(source, onSent)
    } finally {
      this.running -= 1
    }
  }
}

const skip = nixUnavailable()
if (skip) console.warn(`admin nix push: real-Nix tests skipped: ${skip}`)

describe.skipIf(skip !== undefined)('with real Nix', () => {
  const env = nixEnv()
  let dir: string
  let top: string
  let closure: string[]
  let admin: NixSigningKey

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fleetmesh-nix-push-'))
    // A unique tag per run, so the paths carry no signatures from an earlier run.
    top = await buildFakeSystem({ tag: `admin-push-${process.pid}-${Date.now()}`, deps: 2, kb: 64 })
    closure = await closureOf(top)
    admin = NixSigningKey.generate('fleet-test-cache-1')
  }, 120_000)

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('reads the closure and its metadata: references as basenames, NarHash as the dump hashes', async () => {
    expect(new Set(await storeClosure([top], { env }))).toEqual(new Set(closure))
    const infos = await pathInfos(closure, { env })
    expect(infos.map((i) => i.path)).toEqual(closure)
    for (const info of infos) {
      const dump = execFileSync('nix-store', ['--dump', info.path], { env, maxBuffer: 64 << 20 })
      expect(info.narSha256).toBe(createHash('sha256').update(dump).digest('hex'))
      expect(info.narSize).toBe(dump.byteLength)
      for (const ref of info.references) {
        expect(ref.startsWith('/')).toBe(false)
        expect(closure).toContain(`${STORE_DIR}/${ref}`)
      }
    }
    const topInfo = infos.find((i) => i.path === top) as LocalPathInfo
    // The fake system refers to its dependencies and to itself.
    expect(topInfo.references).toContain(top.slice(STORE_DIR.length + 1))
    expect(topInfo.references.length).toBe(closure.length)
    expect(topInfo.deriver).toMatch(/^[0-9a-z]{32}-nixos-system-.*\.drv$/)
  })

  it('builds narinfos that verify with the admin key and whose NarHash matches nix-store --dump', async () => {
    for (const info of await pathInfos(closure, { env })) {
      const file = join(dir, `${info.narSha256}.nar`)
      await dumpNar(info, file, { env })
      const bytes = await readFile(file)
      const hex = createHash('sha256').update(bytes).digest('hex')
      const { narinfo, signed } = signForTrust(buildNarInfo(info), [admin.publicKey], admin)
      expect(signed).toBe(true)
      expect(narinfo.narHash).toBe(nixSha256(hex))
      expect(narinfo.fileHash).toBe(nixSha256(hex))
      expect(narinfo.url).toBe(`nar/${hex}.nar`)
      expect(narinfo.references.every((r) => !r.includes('/'))).toBe(true)
      // What goes over the wire parses back and still verifies.
      const check = checkNarInfoSignature(parseNarInfo(formatNarInfo(narinfo)), [admin.publicKey])
      expect(check).toEqual({ ok: true, key: admin.publicKey })
      // Nix's own hash of the store path agrees.
      const nixHash = execFileSync('nix-store', ['--query', '--hash', info.path], { env }).toString().trim()
      expect(nixHash).toBe(nixSha256(hex))
    }
  })

  it('keeps signatures Nix made with a trusted key (no re-signing)', async () => {
    const key = await nixCacheKey(dir, 'upstream-test-1')
    execFileSync('nix', ['store', 'sign', '--key-file', key.secretFile, '--recursive', top], { env })
    const trusted = NixPublicKey.parse(key.publicKey)
    const upstream = await loadNixSigningKey(key.secretFile)
    for (const info of await pathInfos(closure, { env })) {
      expect(info.signatures.some((s) => s.startsWith('upstream-test-1:'))).toBe(true)
      const result = signForTrust(buildNarInfo(info), [trusted], undefined)
      expect(result.signed).toBe(false)
      expect(checkNarInfoSignature(result.narinfo, [trusted]).ok).toBe(true)
      // Our signature over the same fingerprint is byte-identical to Nix's (Ed25519 is deterministic).
      expect(signForTrust({ ...buildNarInfo(info), sigs: [] }, [trusted], upstream).narinfo.sigs).toEqual(
        result.narinfo.sigs.filter((s) => s.startsWith('upstream-test-1:')),
      )
    }
  })

  it('refuses a NAR whose bytes differ from what the store records', async () => {
    const [info] = await pathInfos([top], { env })
    const wrong = { ...(info as LocalPathInfo), narSha256: '0'.repeat(64) }
    await expect(dumpNar(wrong, join(dir, 'wrong.nar'), { env })).rejects.toMatchObject({
      code: 'nar-mismatch',
    })
  })

  it('pushes only what the cache lacks, each narinfo after its NAR, signed, with progress in bytes', async () => {
    const cache = new StandInCache(new Set([closure[0] as string]))
    const events: PushProgress[] = []
    const result = await pushClosures(cache, [top], {
      env,
      trustedKeys: [admin.publicKey],
      signingKey: admin,
      onProgress: (p) => events.push(p),
      tempDir: dir,
    })
    const lacking = closure.slice(1)
    expect(result).toMatchObject({ closure: closure.length, missing: lacking.length, signed: lacking.length })
    expect(result.stored).toBe(lacking.length)
    expect(cache.calls[0]).toBe(`missing ${closure.length}`)
    expect(cache.calls.filter((c) => c.startsWith('upload')).length).toBe(lacking.length)
    expect(cache.calls[cache.calls.length - 1]).toBe(`put ${lacking.length}`)
    expect(cache.narinfos.map((n) => n.storePath).sort()).toEqual([...lacking].sort())
    for (const n of cache.narinfos) {
      expect(checkNarInfoSignature(n, [admin.publicKey]).ok).toBe(true)
      const hex = n.url.slice(4, 68)
      expect(
        createHash('sha256')
          .update(cache.uploaded.get(hex) as Uint8Array)
          .digest('hex'),
      ).toBe(hex)
    }
    const last = events[events.length - 1] as PushProgress
    expect(last.sentBytes).toBe(result.narBytes)
    expect(last.totalBytes).toBe(result.narBytes)
    expect(last.doneNars).toBe(lacking.length)
  })

  it('dumps and uploads a few NARs at a time, progress in bytes of the total', async () => {
    const wide = await buildFakeSystem({
      tag: `admin-push-wide-${process.pid}-${Date.now()}`,
      deps: 8,
      kb: 16,
    })
    const paths = await closureOf(wide)
    const cache = new SlowCache(new Set(), 3)
    const events: PushProgress[] = []
    const result = await pushClosures(cache, [wide], {
      env,
      trustedKeys: [admin.publicKey],
      signingKey: admin,
      onProgress: (p) => events.push(p),
      progressIntervalMs: 0,
      tempDir: dir,
      concurrency: 3,
    })
    expect(result).toMatchObject({ closure: paths.length, missing: paths.length, stored: paths.length })
    expect(cache.maxRunning).toBe(3)
    expect(cache.narinfos.map((n) => n.storePath).sort()).toEqual([...paths].sort())
    const sent = events.map((e) => e.sentBytes)
    expect(sent).toEqual([...sent].sort((a, b) => a - b))
    expect(events.every((e) => e.totalBytes === result.narBytes)).toBe(true)
    expect(events.at(-1)).toMatchObject({ sentBytes: result.narBytes, doneNars: paths.length })
  })

  it('after a failed upload starts no other, and keeps the narinfos of the NARs that did arrive', async () => {
    const wide = await buildFakeSystem({
      tag: `admin-push-fail-${process.pid}-${Date.now()}`,
      deps: 8,
      kb: 16,
    })
    const cache = new SlowCache(new Set(), 3, 2)
    const err = await pushClosures(cache, [wide], {
      env,
      trustedKeys: [admin.publicKey],
      signingKey: admin,
      tempDir: dir,
      concurrency: 3,
    }).catch((e: unknown) => e)
    expect((err as Error).message).toBe('upload stream reset')
    // The second upload failed while the first and third ran; no fourth was started.
    expect(cache.started).toBe(3)
    expect(cache.uploaded.size).toBe(2)
    expect(cache.narinfos).toHaveLength(2)
  })

  it('fails before uploading anything when paths need signing and there is no key', async () => {
    const cache = new StandInCache(new Set())
    const err = await pushClosures(cache, [top], {
      env,
      trustedKeys: [admin.publicKey],
      signingKey: undefined,
    }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NixPushError)
    expect((err as Error).message).toContain('fleetmesh nix keygen')
    expect(cache.uploaded.size).toBe(0)
  })

  it('names paths that are not in the local store, and a missing nix-store', async () => {
    const absent = '/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-not-built-here'
    const cache = new StandInCache(new Set())
    await expect(
      pushClosures(cache, [absent], { env, trustedKeys: [admin.publicKey], signingKey: admin }),
    ).rejects.toMatchObject({ code: 'not-in-store', message: expect.stringContaining(absent) })
    const noNix = pushClosures(cache, [top], {
      env: { ...env, PATH: join(dir, 'empty-bin') },
      trustedKeys: [admin.publicKey],
      signingKey: admin,
    })
    await expect(noNix).rejects.toBeInstanceOf(NixStoreError)
    await expect(noNix).rejects.toMatchObject({ code: 'not-installed' })
    expect(cache.calls).toEqual([])
  })
})
