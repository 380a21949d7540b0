/**
 * A closure map in one manifest (deploy --nix-map --waves) does not widen what
 * a machine may download: each machine of the map is served the NARs of its
 * own closure and refused its neighbours', exactly like an unknown hash (as
 * test/coordinator/blob-download-scope.test.ts checks for archives). A real
 * coordinator process, real Nix for the closures; the two machines are
 * in-process enrolled identities speaking the blob protocol themselves.
 */
import { execFileSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type BlobResponse,
  blobRequestSchema,
  blobResponseSchema,
  decodeMessage,
  encodeMessage,
  FramedStream,
  PROTOCOLS,
  sha256HexOfNixHash,
} from '../../protocol/index.ts'
import { type EnrolledHost, enrolledHost } from '../../testkit/enrolled-host.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { buildFakeSystem, nixEnv, nixUnavailable } from '../../testkit/nix/index.ts'

const unavailable = nixUnavailable()
if (unavailable !== undefined) console.warn(`closure map download scope skipped: ${unavailable}`)

const RUN = Math.random().toString(36).slice(2, 8)

/** The blob name of a store path's NAR: the hex SHA-256 of the NAR, as the cache stores it. */
function narBlob(path: string): string {
  const out = execFileSync('nix-store', ['--query', '--hash', path], { env: nixEnv(), encoding: 'utf8' })
  return sha256HexOfNixHash(out.trim())
}

describe.skipIf(unavailable !== undefined)('a closure map manifest', () => {
  let fleet: TestFleet
  const machines: EnrolledHost[] = []

  beforeAll(async () => {
    fleet = await TestFleet.create()
    await fleet.startCoordinator()
    const keygen = await fleet.cli(['nix', 'keygen'])
    expect(keygen.code, keygen.stderr).toBe(0)
    for (const m of ['edge-1', 'edge-2']) machines.push(await enrolledHost(fleet, m, ['nixos'], fleet.dir))
  }, 60_000)

  afterAll(async () => {
    for (const m of machines) await m.host.stop()
    await fleet?.stop()
  })

  const ask = async (machine: EnrolledHost, sha256: string): Promise<BlobResponse> => {
    const coordinator = peerIdFromString(machine.coordinator)
    await machine.host.peerStore.merge(coordinator, {
      multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
    })
    const fs = new FramedStream(await machine.host.dialProtocol(coordinator, PROTOCOLS.blob), {
      maxFrameBytes: 1 << 20,
    })
    await fs.send(encodeMessage(blobRequestSchema, { t: 'get', sha256, offset: 0 }))
    const response = decodeMessage(blobResponseSchema, await fs.readOne(), 'blob response', 4096)
    fs.abort(new Error('done'))
    return response
  }

  it("serves each machine its own closure's NARs and refuses the other machine's", async () => {
    const [own1, own2] = await Promise.all(
      ['edge-1', 'edge-2'].map((m) => buildFakeSystem({ tag: `scope-${m}-${RUN}` })),
    )
    if (own1 === undefined || own2 === undefined) throw new Error('no closures built')
    const map = join(fleet.dir, 'map.json')
    await writeFile(map, JSON.stringify({ 'edge-1': own1, 'edge-2': own2 }))
    const deployed = await fleet.cli(
      ['deploy', '--nix-map', map, '--waves', '100%', '--generation', `scope-${RUN}`, '--no-watch'],
      120_000,
    )
    expect(deployed.code, deployed.stderr + deployed.stdout).toBe(0)

    const [edge1, edge2] = machines as [EnrolledHost, EnrolledHost]
    expect(await ask(edge1, narBlob(own1))).toMatchObject({ ok: true })
    expect(await ask(edge2, narBlob(own2))).toMatchObject({ ok: true })
    expect(await ask(edge1, narBlob(own2))).toMatchObject({ ok: false, error: { code: 'not-found' } })
    expect(await ask(edge2, narBlob(own1))).toMatchObject({ ok: false, error: { code: 'not-found' } })
  }, 180_000)
})
