/**
 * Blob transfer, coordinator → agent: a blob uploaded to a real coordinator
 * process is downloaded by an enrolled agent host with the agent's own fetcher
 * (blob protocol over libp2p: TCP + Noise + Yamux), written and hashed as the
 * agent does, then fsync'd. The reference, in the same run: the same bytes from
 * the same BlobStore in the same 256 KiB length-prefixed chunks over plain TCP
 * on loopback (bench/blob-tcp-child.ts, its own process as the coordinator is),
 * written and hashed by the same writeChunks and fsync'd. Runs alternate; the
 * medians are printed, with the ratio the goal names (≥ 0.7 of raw TCP).
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, open, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { AdminClient } from '../admin/client.ts'
import { type AdminHome, loadAdminHome } from '../admin/home.ts'
import { bytesSource, uploadBlob } from '../admin/upload.ts'
import { coordinatorBlobFetcher, writeChunks } from '../agent/blob-fetcher.ts'
import { FileDigest } from '../agent/file-digest.ts'
import { buildManifest, sealManifest } from '../protocol/index.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { TestFleet } from '../testkit/harness.ts'
import { fmt, line } from './measure.ts'

const MIB = 1024 * 1024
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

/** Writes, hashes and fsyncs a download as the agent does; resolves with the seconds it took and the hash. */
export async function land(
  dest: string,
  fetch: (digest: FileDigest) => Promise<void>,
): Promise<[number, string]> {
  await rm(dest, { force: true })
  const digest = new FileDigest(dest)
  const t0 = performance.now()
  await fetch(digest)
  const handle = await open(dest, 'r')
  await handle.datasync()
  await handle.close()
  return [(performance.now() - t0) / 1000, await digest.digest()]
}

/** Length-prefixed frames off a socket, as the blob protocol's FramedStream yields them. */
async function* frames(socket: AsyncIterable<Buffer>): AsyncGenerator<Uint8Array> {
  let buffered: Buffer = Buffer.alloc(0)
  for await (const data of socket) {
    buffered = buffered.length === 0 ? data : Buffer.concat([buffered, data])
    while (buffered.length >= 4) {
      const size = buffered.readUInt32BE(0)
      if (buffered.length < 4 + size) break
      yield buffered.subarray(4, 4 + size)
      buffered = buffered.subarray(4 + size)
    }
  }
}

async function rawTcp(
  blobsDir: string,
  sha256: string,
  size: number,
  dest: string,
): Promise<[number, string]> {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'blob-tcp-child.ts'), blobsDir, sha256], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))
    child.once('exit', (code) => reject(new Error(`raw TCP server exited with ${code}`)))
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  try {
    return await land(dest, async (digest) => {
      const socket = connect(port, '127.0.0.1')
      await writeChunks(
        dest,
        0,
        size,
        frames(socket),
        () => {},
        () => new Error('more bytes than the blob'),
        digest,
      )
    })
  } finally {
    await exited
  }
}

/** Uploads `bytes` random bytes and makes them `machine`'s desired archive: the coordinator serves a machine only those. */
export async function blobFor(
  admin: AdminClient,
  home: AdminHome,
  machine: string,
  bytes: number,
): Promise<{ sha256: string; size: number }> {
  const source = bytesSource(randomBytes(bytes))
  await uploadBlob(admin, source)
  const { sha256, size } = source
  const { maxSequence } = await admin.fleetInfo()
  const manifest = buildManifest({
    fleetId: home.fleet.fleetId,
    sequence: maxSequence + 1,
    generation: machine,
    targets: { machines: [machine], tags: [] },
    payload: { kind: 'archive', sha256, size, sources: [{ kind: 'coordinator' }] },
  })
  await admin.submitManifest(sealManifest(manifest, home.key, home.chain))
  return { sha256, size }
}

export async function benchBlob(mib: number, runs: number): Promise<Record<string, number>> {
  const fleet = await TestFleet.create()
  let admin: AdminClient | undefined
  let stopHost: (() => Promise<void>) | undefined
  try {
    await fleet.startCoordinator(['--idle-timeout', '10m'])
    const home = await loadAdminHome(fleet.home)
    admin = await AdminClient.connect(home)
    const dir = join(fleet.dir, 'blob-bench')
    await mkdir(dir, { recursive: true })
    const { host } = await enrolledHost(fleet, 'blob-bench', ['bench'], dir)
    stopHost = async () => {
      await host.stop()
    }
    const { sha256, size } = await blobFor(admin, home, 'blob-bench', mib * MIB)
    const fetcher = coordinatorBlobFetcher(host, peerIdFromString(home.fleet.coordinator.peerId))
    const dest = join(dir, 'download')
    const mesh: number[] = []
    const raw: number[] = []
    for (let i = 0; i < runs; i++) {
      const [s1, h1] = await land(dest, (digest) =>
        fetcher.fetch(sha256, size, [], dest, () => {}, AbortSignal.timeout(600_000), digest),
      )
      const [s2, h2] = await rawTcp(join(fleet.coordState, 'blobs'), sha256, size, dest)
      if (h1 !== sha256 || h2 !== sha256) throw new Error('a download does not hash to the blob')
      mesh.push(s1)
      raw.push(s2)
    }
    const meshRate = mib / median(mesh)
    const rawRate = mib / median(raw)
    console.log(
      `Blob download, ${mib} MiB coordinator → agent, written, hashed and fsync'd; median of ${runs}`,
    )
    line('fleetmesh blob protocol (libp2p TCP + Noise + Yamux)', `${fmt(meshRate, 1)} MiB/s`)
    line('reference: raw TCP, same chunks, writes, hash and fsync', `${fmt(rawRate, 1)} MiB/s`)
    line('ratio fleetmesh / raw TCP (goal ≥ 0.7)', fmt(meshRate / rawRate, 2))
    return { 'mesh MiB/s': meshRate, 'raw MiB/s': rawRate, ratio: meshRate / rawRate }
  } finally {
    await stopHost?.()
    await admin?.close()
    await fleet.stop()
  }
}
