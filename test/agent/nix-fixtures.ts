/**
 * A stand-in for the coordinator's Nix cache in the nixos activator tests: a
 * real binary cache directory written by `nix copy --to file://…`, served
 * through the {@link NixCacheSource} interface the way the coordinator serves
 * its cache over `/fleetmesh/nix/1`: whole closures of narinfos rewritten to
 * uncompressed NARs named by their SHA-256 (`URL: nar/<hex>.nar`), signatures
 * untouched, and NARs by hash, resumed from the bytes already downloaded.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFile, open, readdir, readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { NixCacheSource } from '../../agent/nix-cache-client.ts'
import { fileSize } from '../../lib/files.ts'
import { sha256Hex } from '../../lib/hash.ts'
import { toNixBase32 } from '../../lib/nix-base32.ts'
import {
  type NarInfo,
  nixSha256,
  parseNarInfo,
  STORE_DIR,
  sha256HexOfNixHash,
} from '../../protocol/narinfo.ts'
import { nixEnv } from '../../testkit/nix/index.ts'

const run = promisify(execFile)

/** Copies the closure of `path` into the binary cache at `dir`, signed with `secretKeyFile` when given. */
export async function copyToCache(dir: string, path: string, secretKeyFile?: string): Promise<void> {
  const params = ['compression=none', ...(secretKeyFile !== undefined ? [`secret-key=${secretKeyFile}`] : [])]
  await run('nix', ['copy', '--to', `file://${dir}?${params.join('&')}`, path], { env: nixEnv() })
}

export interface CoordinatorStandIn extends NixCacheSource {
  /** NARs requested through fetchNar, by store path. */
  narsFetched: string[]
  /** The file in the cache directory holding the NAR of `storePath`. */
  narFile(storePath: string): Promise<string>
}

/** The coordinator's cache as the agent sees it, served from a `nix copy` cache directory. */
export function coordinatorStandIn(dir: string): CoordinatorStandIn {
  const narsFetched: string[] = []
  const read = async (): Promise<Map<string, NarInfo>> => {
    const infos = new Map<string, NarInfo>()
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.narinfo')) continue
      const info = parseNarInfo(await readFile(join(dir, name), 'utf8'))
      infos.set(info.storePath, info)
    }
    return infos
  }
  const byHex = async (sha256: string) =>
    [...(await read()).values()].find((i) => sha256HexOfNixHash(i.narHash) === sha256)
  return {
    narsFetched,
    async closure(storePath) {
      const infos = await read()
      const narinfos: NarInfo[] = []
      const missing: string[] = []
      const seen = new Set<string>()
      const queue = [storePath]
      for (let path = queue.pop(); path !== undefined; path = queue.pop()) {
        if (seen.has(path)) continue
        seen.add(path)
        const info = infos.get(path)
        if (info === undefined) {
          missing.push(path)
          continue
        }
        // As the coordinator holds them: uncompressed, named by the NAR's SHA-256.
        const hex = sha256HexOfNixHash(info.narHash)
        narinfos.push({
          ...info,
          url: `nar/${hex}.nar`,
          compression: 'none',
          fileHash: nixSha256(hex),
          fileSize: info.narSize,
        })
        queue.push(...info.references.map((r) => `${STORE_DIR}/${r}`))
      }
      return { narinfos, missing }
    },
    async fetchNar(sha256, size, dest, onProgress, signal) {
      const info = await byHex(sha256)
      if (info === undefined) throw new Error(`the stand-in has no NAR ${sha256}`)
      narsFetched.push(info.storePath)
      const offset = (await fileSize(dest)) ?? 0
      const source = await open(join(dir, info.url), 'r')
      try {
        const bytes = new Uint8Array(Math.max(0, size - offset))
        const { bytesRead } = await source.read(bytes, 0, bytes.byteLength, offset)
        signal.throwIfAborted()
        await appendFile(dest, bytes.subarray(0, bytesRead))
        onProgress(offset + bytesRead)
      } finally {
        await source.close()
      }
    },
    async narFile(storePath) {
      const info = (await read()).get(storePath)
      if (info === undefined) throw new Error(`${storePath} is not in the cache`)
      return join(dir, info.url)
    },
  }
}

export interface FakeNar {
  info: NarInfo
  bytes: Uint8Array
  /** SHA-256 of the NAR bytes, hex: the blob name. */
  sha256: string
  /** The store path's hash part: the narinfo name. */
  hash: string
}

/** Random "NAR" bytes and a narinfo for them, as an upstream cache (xz, signed by someone) would have it. */
export function fakeNar(name: string, size = 3000, references: string[] = []): FakeNar {
  const bytes = new Uint8Array(randomBytes(size))
  const sha256 = sha256Hex(bytes)
  const hash = toNixBase32(new Uint8Array(randomBytes(20)))
  const info: NarInfo = {
    storePath: `${STORE_DIR}/${hash}-${name}`,
    url: `nar/${toNixBase32(new Uint8Array(randomBytes(32)))}.nar.xz`,
    compression: 'xz',
    fileHash: null,
    fileSize: null,
    narHash: nixSha256(sha256),
    narSize: size,
    references,
    deriver: null,
    ca: null,
    sigs: ['fleet-1:c2lnbmF0dXJl'],
  }
  return { info, bytes, sha256, hash }
}

/** Serves a `nix copy` cache directory over HTTP, as a manifest's own substituter would. */
export async function serveCacheDir(dir: string): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string
    if (req.method !== 'GET' || path.includes('..')) return void res.writeHead(405).end()
    readFile(join(dir, path)).then(
      (body) => res.writeHead(200, { 'content-length': body.byteLength }).end(body),
      () => res.writeHead(404).end(),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}
