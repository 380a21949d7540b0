import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TrustContext } from '../../agent/verify.ts'
import { issueCertificate, type Scope, type SignedCertificate } from '../../keys/certificate.ts'
import { PrivateKey } from '../../keys/identity.ts'
import { buildManifest, sealManifest } from '../../protocol/manifest.ts'
import type { Manifest } from '../../protocol/messages.ts'
import type { Archive } from '../../testkit/archives.ts'

export const HOUR = 3_600_000
export const hex = (n: number) => randomBytes(n).toString('hex')
export const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

export interface Fleet {
  root: PrivateKey
  admin: PrivateKey
  chain: SignedCertificate[]
  fleetId: string
  machine: string
  tags: string[]
  trust: TrustContext
  manifest(overrides?: Partial<Manifest>): Manifest
  sign(manifest: Manifest, options?: { signer?: PrivateKey; chain?: SignedCertificate[] }): Uint8Array
}

export function makeFleet(options: { scope?: Scope; machine?: string; tags?: string[] } = {}): Fleet {
  const root = PrivateKey.generate()
  const admin = PrivateKey.generate()
  const fleetId = 'acme'
  const machine = options.machine ?? 'edge-1'
  const tags = options.tags ?? ['lab']
  const chain = [
    issueCertificate(root, {
      subject: admin.publicKey,
      name: 'alice',
      capabilities: ['deploy'],
      // Names the machine too: its manifests target it by name, which a tag alone does not cover.
      scope: options.scope ?? { machines: [machine], tags: ['lab'] },
      notAfter: Date.now() + 24 * HOUR,
    }),
  ]
  return {
    root,
    admin,
    chain,
    fleetId,
    machine,
    tags,
    trust: { fleetRoot: root.publicKey, fleetId, machine, tags },
    manifest: (overrides = {}) => ({
      ...buildManifest({
        fleetId,
        sequence: 1,
        generation: 'web-1',
        targets: { machines: [machine], tags: [] },
        payload: { kind: 'archive', sha256: hex(32), size: 1, sources: [{ kind: 'coordinator' }] },
        confirmTimeoutMs: 5000,
        validForMs: HOUR,
      }),
      ...overrides,
    }),
    sign: (manifest, opts = {}) => sealManifest(manifest, opts.signer ?? admin, opts.chain ?? chain),
  }
}

export async function tempDir(prefix = 'fleetmesh-agent-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix))
}

export const removeDir = (dir: string) => rm(dir, { recursive: true, force: true })

export interface BlobServer {
  url(sha: string): string
  add(bytes: Uint8Array): { sha256: string; size: number; url: string }
  /** Serve only this many bytes of the next full request for `sha`, then hold the connection open. */
  stallOnce(sha: string, atByte: number): void
  requests: { sha: string; range: string | null }[]
  close(): Promise<void>
}

export async function startBlobServer(): Promise<BlobServer> {
  const blobs = new Map<string, Uint8Array>()
  const stalls = new Map<string, number>()
  const requests: { sha: string; range: string | null }[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const sha = (req.url ?? '').replace(/^\/blob\//, '')
    const range = req.headers.range ?? null
    requests.push({ sha, range })
    const blob = blobs.get(sha)
    if (blob === undefined) {
      res.writeHead(404).end('no such blob')
      return
    }
    let start = 0
    const m = /^bytes=(\d+)-$/.exec(range ?? '')
    if (m !== null) {
      start = Number(m[1])
      if (start >= blob.byteLength) {
        res.writeHead(416, { 'content-range': `bytes */${blob.byteLength}` }).end()
        return
      }
      res.writeHead(206, {
        'content-length': blob.byteLength - start,
        'content-range': `bytes ${start}-${blob.byteLength - 1}/${blob.byteLength}`,
      })
    } else {
      res.writeHead(200, { 'content-length': blob.byteLength })
    }
    const stall = stalls.get(sha)
    if (stall !== undefined && start === 0) {
      stalls.delete(sha)
      res.write(blob.subarray(0, stall))
      return
    }
    res.end(blob.subarray(start))
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const url = (sha: string) => `http://127.0.0.1:${port}/blob/${sha}`
  return {
    url,
    add(bytes) {
      const sha = sha256(bytes)
      blobs.set(sha, bytes)
      return { sha256: sha, size: bytes.byteLength, url: url(sha) }
    },
    stallOnce(sha, atByte) {
      stalls.set(sha, atByte)
    },
    requests,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** Polls until `probe` returns something other than undefined/false, or fails after timeoutMs. */
export async function waitFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** A process is gone when /proc has no entry for it or it is a zombie nobody reaped yet. */
export async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** Publishes the archive on the server and returns the payload pointing at it. */
export function servedPayload(server: BlobServer, archive: Archive): Manifest['payload'] {
  const { sha256, size, url } = server.add(archive.bytes)
  return { kind: 'archive', sha256, size, sources: [{ kind: 'http', url }] }
}
