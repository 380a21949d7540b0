/**
 * The coordinator's Nix binary cache: narinfos in the store, the rules nix-put
 * enforces, closures over `/fleetmesh/nix/1` on real libp2p hosts, the admin
 * ops (nix-*, machine-log) and retention. Narinfos are text, so no Nix is needed.
 */

import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { loadAdminHome } from '../../admin/home.ts'
import { BlobStore } from '../../coordinator/blobs.ts'
import { type RunningCoordinator, startCoordinator } from '../../coordinator/daemon.ts'
import { NixCache, NixCacheError } from '../../coordinator/nix-cache.ts'
import { NixRetention } from '../../coordinator/nix-retention.ts'
import type { FleetStore } from '../../coordinator/store.ts'
import { DOMAINS } from '../../keys/domains.ts'
import { NixSigningKey, PrivateKey } from '../../keys/index.ts'
import { sha256Hex } from '../../lib/index.ts'
import { createHost, type FleetHost } from '../../net/host.ts'
import { decodeMessage, encodeMessage } from '../../protocol/codec.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import {
  type AdminOp,
  adminRequestSchema,
  adminResponseSchema,
  type Manifest,
  type StatusReport,
} from '../../protocol/messages.ts'
import {
  checkNarInfoSignature,
  formatNarInfo,
  type NarInfo,
  nixSha256,
  parseNarInfo,
  signNarInfo,
} from '../../protocol/narinfo.ts'
import {
  MAX_NIX_FRAME_BYTES,
  type NixClosureFrame,
  nixClosureFrameSchema,
  nixClosureRequestSchema,
} from '../../protocol/nix-cache.ts'
import { hex, sampleManifest, sampleStatus } from '../../testkit/fixtures.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { manifestRecord } from '../../testkit/manifest-record.ts'
import { describeStores } from '../../testkit/stores.ts'

const NIX_BASE32 = '0123456789abcdfghijklmnpqrsvwxyz'
const cacheKey = NixSigningKey.generate('fleet-cache-1')

/** A fresh store path; `name` must be a valid store path name. */
function storePath(name: string): string {
  const hash = [...randomBytes(32)].map((b) => NIX_BASE32[b % 32]).join('')
  return `/nix/store/${hash}-${name}`
}
const basename = (path: string) => path.slice('/nix/store/'.length)
const hashOf = (path: string) => basename(path).slice(0, 32)

interface Nar {
  hex: string
  size: number
}

/** Puts `content` into the blob store as a NAR would be. */
async function putNar(blobs: BlobStore, content: string): Promise<Nar> {
  const bytes = new TextEncoder().encode(content)
  const sha = sha256Hex(bytes)
  await blobs.receive(
    sha,
    bytes.byteLength,
    0,
    (async function* () {
      yield bytes
    })(),
  )
  return { hex: sha, size: bytes.byteLength }
}

/** A signed narinfo as the admin pushes it. */
function narinfo(path: string, refs: readonly string[], nar: Nar, overrides: Partial<NarInfo> = {}): string {
  const info: NarInfo = {
    storePath: path,
    url: `nar/${nar.hex}.nar`,
    compression: 'none',
    fileHash: nixSha256(nar.hex),
    fileSize: nar.size,
    narHash: nixSha256(nar.hex),
    narSize: nar.size,
    references: refs.map(basename).sort(),
    deriver: null,
    ca: null,
    sigs: [],
    ...overrides,
  }
  return formatNarInfo(signNarInfo(info, cacheKey))
}

/** Pushes `path` with its references, its NAR made of the path's own name. */
async function push(cache: NixCache, path: string, refs: readonly string[] = [], at = 1000): Promise<Nar> {
  const nar = await putNar(cache.blobs, `nar of ${path}`)
  await cache.put([narinfo(path, refs, nar)], at)
  return nar
}

async function refusal(promise: Promise<unknown>): Promise<NixCacheError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(NixCacheError)
  return err as NixCacheError
}

describeStores((kind) => {
  describe('the cache over the store', () => {
    let dir: string
    let store: FleetStore
    let cache: NixCache
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'fm-nix-'))
      store = await kind.open()
      const blobs = new BlobStore(join(dir, 'blobs'))
      await blobs.init()
      cache = new NixCache(store, blobs)
    })
    afterEach(async () => {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    })

    it('stores a narinfo once: the same one again is already had', async () => {
      const path = storePath('hello-2.12')
      const nar = await putNar(cache.blobs, 'hello')
      const text = narinfo(path, [], nar)
      expect(await cache.put([text], 1000)).toEqual({ stored: 1, alreadyHad: 0 })
      expect(await cache.put([text], 2000)).toEqual({ stored: 0, alreadyHad: 1 })
      const [record] = await store.getNarInfos([hashOf(path)])
      expect(record).toMatchObject({ storePath: path, narSha256: nar.hex, narSize: nar.size, addedAt: 1000 })
      expect(record?.touchedAt).toBe(2000)
    })

    it('stores the normalised narinfo, whose signature still verifies', async () => {
      const path = storePath('glibc-2.40')
      const dep = storePath('linux-headers-6.1')
      const nar = await putNar(cache.blobs, 'glibc')
      // hex NarHash, no FileHash or FileSize, another URL: all rewritten
      const pushed = narinfo(path, [dep, path], nar, {
        url: 'nar/elsewhere.nar',
        narHash: `sha256:${nar.hex}`,
        fileHash: null,
        fileSize: null,
        deriver: 'mi8c6k7l3q464zsxyqq233ypamn10lw8-glibc-2.40.drv',
      })
      await cache.put([pushed], 1000)
      const [record] = await store.getNarInfos([hashOf(path)])
      const served = parseNarInfo(record?.narinfo ?? '')
      expect(served).toMatchObject({
        url: `nar/${nar.hex}.nar`,
        compression: 'none',
        narHash: nixSha256(nar.hex),
        fileHash: nixSha256(nar.hex),
        fileSize: nar.size,
        narSize: nar.size,
        references: [basename(dep), basename(path)].sort(),
        deriver: 'mi8c6k7l3q464zsxyqq233ypamn10lw8-glibc-2.40.drv',
      })
      expect(served.sigs).toHaveLength(1)
      expect(checkNarInfoSignature(served, [cacheKey.publicKey]).ok).toBe(true)
      expect(record?.references).toEqual(served.references)
    })

    it('reports paths with no narinfo, or whose NAR is gone, as missing', async () => {
      const held = storePath('held-1')
      const gone = storePath('gone-1')
      const never = storePath('never-1')
      await push(cache, held)
      const goneNar = await push(cache, gone)
      await cache.blobs.remove(goneNar.hex)
      expect(await cache.missing([held, gone, never], 5000)).toEqual([gone, never])
      // asking touches what is held, so a push that found it needs no upload keeps it
      const [record] = await store.getNarInfos([hashOf(held)])
      expect(record?.touchedAt).toBe(5000)
    })

    it('walks a diamond of references once per path and reports a referenced path it lacks', async () => {
      const d = storePath('d')
      const b = storePath('b')
      const c = storePath('c')
      const e = storePath('e-missing')
      const a = storePath('a-system')
      await push(cache, d, [d])
      await push(cache, b, [d])
      await push(cache, c, [d, e])
      await push(cache, a, [a, b, c])
      const closure = await cache.closure(a)
      expect(closure.held.map((r) => r.storePath).sort()).toEqual([a, b, c, d].sort())
      expect(closure.missing).toEqual([e])
      expect(await cache.closure(e)).toEqual({ held: [], missing: [e] })
    })

    it('refuses a closure larger than the protocol allows', async () => {
      const fake = {
        narInfoClosure: async () => ({ held: [], missing: [], overflow: true }),
      } as unknown as FleetStore
      expect((await refusal(new NixCache(fake, cache.blobs).closure(storePath('x')))).code).toBe(
        'closure-too-large',
      )
    })

    it('refuses a nix-put whole, naming the path and the rule it breaks', async () => {
      const path = storePath('refused-1')
      const good = storePath('good-1')
      const nar = await putNar(cache.blobs, 'refused')
      const goodText = narinfo(good, [], await putNar(cache.blobs, 'good'))
      const other = sha256Hex('some other bytes')
      const cases: [string, string, RegExp][] = [
        ['StorePath: nonsense\n', 'bad-narinfo', /narinfo #2/],
        [narinfo(path, [], nar, { compression: 'xz', url: `nar/${nar.hex}.nar.xz` }), 'compressed', /xz/],
        [narinfo(path, [], nar, { fileHash: nixSha256(other) }), 'file-hash-mismatch', /FileHash/],
        [narinfo(path, [], nar, { fileSize: nar.size + 1 }), 'file-size-mismatch', /FileSize/],
        [
          narinfo(path, [], { hex: other, size: 16 }),
          'nar-missing',
          new RegExp(`blob ${other}\\) is not on the coordinator`),
        ],
        [
          narinfo(path, [], nar, { narSize: nar.size + 1, fileSize: nar.size + 1 }),
          'nar-size-mismatch',
          new RegExp(`has ${nar.size} bytes`),
        ],
      ]
      for (const [text, code, message] of cases) {
        const err = await refusal(cache.put([goodText, text], 1000))
        expect(err.code).toBe(code)
        expect(err.message).toMatch(message)
        if (code !== 'bad-narinfo') expect(err.message).toContain(path)
      }
      // nothing of a refused request is stored, not even its valid narinfos
      expect(await store.getNarInfos([hashOf(good), hashOf(path)])).toEqual([])
    })
  })

  describe('retention', () => {
    const HOUR = 3_600_000
    const t0 = 1_000_000_000_000
    const admin = PrivateKey.generate()
    let dir: string
    let store: FleetStore
    let cache: NixCache
    let sequence = 0

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'fm-nix-gc-'))
      store = await kind.open()
      const blobs = new BlobStore(join(dir, 'blobs'))
      await blobs.init()
      cache = new NixCache(store, blobs)
      for (const name of ['edge-1', 'edge-2']) {
        const key = PrivateKey.generate()
        await store.enrollMachine({
          name,
          peerId: key.toPeerId().toString(),
          publicKey: key.publicKey.toString(),
          tags: [],
          facts: {},
          nonce: hex(16),
          at: t0,
        })
      }
    })
    afterEach(async () => {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    })

    async function submit(machine: string, payload: Manifest['payload']): Promise<void> {
      sequence++
      const manifest = sampleManifest({
        sequence,
        targets: { machines: [machine], tags: [] },
        payload,
        activation: payload.kind === 'nix' ? 'switch' : 'profile',
      })
      await store.addManifest(manifestRecord(manifest, admin, { submittedAt: t0 }), [machine])
    }
    const nixPayload = (storePath: string): Manifest['payload'] => ({
      kind: 'nix',
      storePath,
      substituters: [],
      trustedPublicKeys: ['cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='],
    })

    it('keeps desired and recent closures, collects the rest once the grace period is over', async () => {
      const shared = storePath('glibc')
      const dep1 = storePath('dep-1')
      const sys1 = storePath('system-1')
      const dep2 = storePath('dep-2')
      const sys2 = storePath('system-2')
      const orphan = storePath('orphan')
      const twin = storePath('twin-of-dep-2')
      for (const [path, refs] of [
        [shared, []],
        [dep1, [shared]],
        [sys1, [dep1, shared]],
        [dep2, [shared]],
        [sys2, [dep2]],
        [orphan, []],
      ] as [string, string[]][]) {
        await push(cache, path, refs, t0)
      }
      // twin is kept alive (recent) and shares dep2's NAR, so that blob stays
      const dep2Nar = (await store.getNarInfos([hashOf(dep2)]))[0]!
      const twinNar = { hex: dep2Nar.narSha256, size: dep2Nar.narSize }
      // the orphan's NAR is also an archive manifest's payload, so that blob stays too
      const orphanNar = (await store.getNarInfos([hashOf(orphan)]))[0]!
      const sys2Nar = (await store.getNarInfos([hashOf(sys2)]))[0]!

      await submit('edge-1', nixPayload(sys1)) // edge-1's desired: kept whatever its age
      await submit('edge-2', nixPayload(sys2)) // superseded below and not among the newest 1
      await submit('edge-2', {
        kind: 'archive',
        sha256: orphanNar.narSha256,
        size: orphanNar.narSize,
        sources: [{ kind: 'coordinator' }],
      })
      await cache.put([narinfo(twin, [], twinNar)], t0 + 3 * HOUR)

      const retention = new NixRetention({ store, blobs: cache.blobs, keepManifests: 1, graceMs: 2 * HOUR })
      // within the grace period nothing goes
      expect((await retention.collect(t0 + HOUR)).deleted).toEqual([])

      const collected = await retention.collect(t0 + 3 * HOUR)
      expect(collected.roots).toEqual([sys1])
      expect(collected.deleted).toEqual([dep2, sys2, orphan].sort())
      expect(collected.deletedNars).toEqual([sys2Nar.narSha256])
      expect(await cache.blobs.size(sys2Nar.narSha256)).toBeUndefined()
      expect(await cache.blobs.size(dep2Nar.narSha256)).toBe(dep2Nar.narSize)
      expect(await cache.blobs.size(orphanNar.narSha256)).toBe(orphanNar.narSize)
      expect(await cache.missing([sys1, dep1, shared, twin, sys2, dep2, orphan], t0 + 3 * HOUR)).toEqual([
        sys2,
        dep2,
        orphan,
      ])
    })

    it('keeps the newest manifests, and paths an admin asked about within the grace period', async () => {
      const older = storePath('system-older')
      const newer = storePath('system-newer')
      const pushedAhead = storePath('system-next')
      await push(cache, older, [], t0)
      await push(cache, newer, [], t0)
      await push(cache, pushedAhead, [], t0)
      await submit('edge-1', nixPayload(older))
      await submit('edge-1', nixPayload(newer))
      // a deploy being prepared asks which paths the cache lacks: that touches them
      expect(await cache.missing([pushedAhead], t0 + 5 * HOUR)).toEqual([])
      const retention = new NixRetention({ store, blobs: cache.blobs, keepManifests: 2, graceMs: 2 * HOUR })
      expect((await retention.collect(t0 + 6 * HOUR)).deleted).toEqual([])
      const fewer = new NixRetention({ store, blobs: cache.blobs, keepManifests: 1, graceMs: 2 * HOUR })
      expect((await fewer.collect(t0 + 6 * HOUR)).deleted).toEqual([older])
      expect((await fewer.collect(t0 + 8 * HOUR)).deleted).toEqual([pushedAhead])
    })
  })
})

describe('over the mesh', () => {
  let fleet: TestFleet
  let coordinator: RunningCoordinator
  const hosts: FleetHost[] = []

  beforeAll(async () => {
    fleet = await TestFleet.create()
    coordinator = await startCoordinator({
      stateDir: fleet.coordState,
      listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
    })
  })
  afterAll(async () => {
    for (const h of hosts.splice(0)) await h.stop()
    await coordinator.stop()
    await fleet.stop()
  })

  async function peer(key = PrivateKey.generate()): Promise<FleetHost> {
    const h = await createHost({ role: 'agent', privateKey: key.toLibp2p(), listen: [] })
    hosts.push(h)
    await h.peerStore.merge(coordinator.host.peerId, {
      multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
    })
    return h
  }

  async function enrolledPeer(name: string): Promise<FleetHost> {
    const key = PrivateKey.generate()
    await coordinator.store.enrollMachine({
      name,
      peerId: key.toPeerId().toString(),
      publicKey: key.publicKey.toString(),
      tags: [],
      facts: {},
      nonce: hex(16),
      at: Date.now(),
    })
    return peer(key)
  }

  async function open(h: FleetHost, protocol: string): Promise<FramedStream> {
    return new FramedStream(await h.dialProtocol(coordinator.host.peerId, protocol), {
      maxFrameBytes: 1 << 22,
    })
  }

  /** Asks for a closure and reads every frame up to and including `end` or `error`. */
  async function askClosure(h: FleetHost, path: string): Promise<NixClosureFrame[]> {
    const fs = await open(h, PROTOCOLS.nix)
    await fs.send(encodeMessage(nixClosureRequestSchema, { t: 'closure', storePath: path }))
    const frames: NixClosureFrame[] = []
    while (true) {
      const frame = decodeMessage(
        nixClosureFrameSchema,
        await fs.readOne({ timeoutMs: 10_000 }),
        'frame',
        MAX_NIX_FRAME_BYTES,
      )
      frames.push(frame)
      if (frame.t !== 'narinfo') return frames
    }
  }

  let adminHost: FleetHost | undefined
  async function adminRequest(body: AdminOp) {
    const home = await loadAdminHome(fleet.home)
    adminHost ??= await peer()
    const fs = await open(adminHost, PROTOCOLS.admin)
    await fs.send(
      sealEnvelope(
        adminRequestSchema,
        DOMAINS.adminRequest,
        { v: 1, nonce: hex(16), issuedAt: Date.now(), body },
        home.key,
        home.chain,
      ),
    )
    return decodeMessage(adminResponseSchema, await fs.readOne({ timeoutMs: 10_000 }), 'response', 1 << 22)
  }

  it('streams the closure to an enrolled machine: a narinfo per held path, then the missing ones', async () => {
    const cache = coordinator.nixCache
    const lib = storePath('lib')
    const absent = storePath('absent')
    const sys = storePath('nixos-system-edge')
    await push(cache, lib, [lib])
    await push(cache, sys, [lib, absent, sys])
    const frames = await askClosure(await enrolledPeer('nix-edge-1'), sys)
    const narinfos = frames.filter((f) => f.t === 'narinfo').map((f) => parseNarInfo(f.narinfo).storePath)
    expect(narinfos.sort()).toEqual([lib, sys].sort())
    expect(frames.at(-1)).toEqual({ t: 'end', paths: 2, missing: [absent] })
  })

  it('refuses a peer that is not enrolled', async () => {
    const frames = await askClosure(await peer(), storePath('anything'))
    expect(frames).toEqual([{ t: 'error', error: expect.objectContaining({ code: 'not-enrolled' }) }])
  })

  it('answers with an error when the missing paths do not fit the end frame', async () => {
    const refs = Array.from({ length: 1500 }, (_, i) => storePath(`m${i}`))
    const sys = storePath('huge-system')
    await push(coordinator.nixCache, sys, refs)
    const frames = await askClosure(await enrolledPeer('nix-edge-2'), sys)
    expect(frames).toEqual([{ t: 'error', error: expect.objectContaining({ code: 'too-many-missing' }) }])
  })

  it('resets a stream that sends garbage or an oversized frame, counts it, and keeps serving', async () => {
    const h = await enrolledPeer('nix-edge-3')
    const before = coordinator.counters.snapshot()
    const garbage = await open(h, PROTOCOLS.nix)
    await garbage.send(new Uint8Array(randomBytes(200)))
    await expect(garbage.read({ timeoutMs: 10_000 })).rejects.toThrow()
    const big = await h.dialProtocol(coordinator.host.peerId, PROTOCOLS.nix)
    big.send(new Uint8Array([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]))
    await expect(new FramedStream(big).read({ timeoutMs: 10_000 })).rejects.toThrow()
    const after = coordinator.counters.snapshot()
    expect(after.decode).toBeGreaterThan(before.decode)
    expect(after.oversized).toBe(before.oversized + 1)
    const absent = storePath('still-serving')
    expect(await askClosure(h, absent)).toEqual([{ t: 'end', paths: 0, missing: [absent] }])
  })

  it('serves the nix admin ops and audits each request once', async () => {
    const blobs = coordinator.nixCache.blobs
    const dep = storePath('admin-dep')
    const sys = storePath('admin-system')
    const depNar = await putNar(blobs, 'admin dep')
    const sysNar = await putNar(blobs, 'admin system')
    const audited = (await coordinator.store.listAudit(0, 10_000)).length

    expect(await adminRequest({ op: 'nix-missing', storePaths: [sys, dep] })).toEqual({
      ok: true,
      result: { missing: [sys, dep] },
    })
    const refused = await adminRequest({
      op: 'nix-put',
      narinfos: [narinfo(dep, [], depNar), narinfo(sys, [dep], sysNar, { compression: 'zstd' })],
    })
    expect(refused).toMatchObject({ ok: false, error: { code: 'compressed' } })
    expect(await adminRequest({ op: 'nix-closure', storePath: sys })).toEqual({
      ok: true,
      result: { paths: 0, narSize: 0, missing: [sys] },
    })
    const texts = [narinfo(dep, [], depNar), narinfo(sys, [dep], sysNar)]
    expect(await adminRequest({ op: 'nix-put', narinfos: texts })).toEqual({
      ok: true,
      result: { stored: 2, alreadyHad: 0 },
    })
    expect(await adminRequest({ op: 'nix-closure', storePath: sys })).toEqual({
      ok: true,
      result: { paths: 2, narSize: depNar.size + sysNar.size, missing: [] },
    })

    const records = (await coordinator.store.listAudit(0, 10_000)).slice(audited)
    expect(records.map((r) => [r.action, r.outcome])).toEqual([
      ['nix-missing', 'ok'],
      ['nix-put', 'denied'],
      ['nix-closure', 'ok'],
      ['nix-put', 'ok'],
      ['nix-closure', 'ok'],
    ])
    expect(records[1]?.detail).toContain(sys)
    expect(records[3]?.detail).toBe('2 stored, 0 already had')
  })

  it('returns the last update log a machine reported', async () => {
    await enrolledPeer('log-edge-1')
    const report = (seq: number, overrides: Partial<StatusReport>) => ({
      machine: 'log-edge-1',
      seq,
      report: sampleStatus({ machine: 'log-edge-1', seq, ...overrides }),
      envelope: new Uint8Array(randomBytes(80)),
      receivedAt: Date.now(),
    })
    expect(await adminRequest({ op: 'machine-log', machine: 'log-edge-1' })).toEqual({
      ok: true,
      result: {
        machine: 'log-edge-1',
        state: null,
        manifestId: null,
        generation: null,
        error: null,
        log: null,
        rebootRequired: false,
        reportedAt: null,
      },
    })
    const failed = report(1, {
      state: 'failed',
      desiredGeneration: 'web-2',
      error: { code: 'activation-failed', message: 'switch-to-configuration exited 1' },
      log: 'switching to web-2 (switch)\nfailing on purpose\n',
      rebootRequired: false,
    })
    await coordinator.store.recordStatus(failed)
    // a later report of the same update without a log (the agent idles) does not hide its log
    await coordinator.store.recordStatus(report(2, { state: 'idle', manifestId: failed.report.manifestId }))
    expect(await adminRequest({ op: 'machine-log', machine: 'log-edge-1' })).toEqual({
      ok: true,
      result: {
        machine: 'log-edge-1',
        state: 'failed',
        manifestId: failed.report.manifestId,
        generation: 'web-2',
        error: failed.report.error,
        log: 'switching to web-2 (switch)\nfailing on purpose\n',
        rebootRequired: false,
        reportedAt: failed.report.timestamp,
      },
    })
    expect(await adminRequest({ op: 'machine-log', machine: 'nobody' })).toMatchObject({
      ok: false,
      error: { code: 'unknown-machine' },
    })
  })
})
