// A revocation that reaches the agent while an update is under way: the manifest
// is verified again right before activation, against the revocation list as it
// is then, and a signer revoked meanwhile is refused as "revoked" with nothing
// switched; a revocation arriving mid-download stops the download at once. After
// a start nothing is activated until the coordinator's list has been heard.
import { readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Activator } from '../../agent/activator.ts'
import { httpBlobFetcher } from '../../agent/blob-fetcher.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { createUpdater, type ReportBody, type Updater } from '../../agent/updater.ts'
import { decodeCertificate, issueCertificate, PrivateKey } from '../../keys/index.ts'
import { raceSignal } from '../../lib/index.ts'
import { EMPTY_HEAD, RevocationChain, sealRevocation } from '../../protocol/index.ts'
import { sh } from '../../testkit/archives.ts'
import { type BlobServer, HOUR, makeFleet, removeDir, startBlobServer, tempDir } from './fixtures.ts'
import { agentLayout, readHookLines, signedRelease } from './releases.ts'

const fleet = makeFleet()
/** An admin of the whole fleet who may revoke: signs the revocation list's entries. */
const revoker = PrivateKey.generate()
const revokerChain = [
  issueCertificate(fleet.root, {
    subject: revoker.publicKey,
    name: 'root-admin',
    capabilities: ['admin'],
    scope: { all: true },
    notAfter: Date.now() + 24 * HOUR,
  }),
]
const deployerSerial = decodeCertificate(fleet.chain[0] as (typeof fleet.chain)[number]).serial

/** A download that waits until the test opens its gate, so the test can act while it is in flight. */
function gatedFetch(inner: Activator) {
  let started: () => void = () => {}
  let open: () => void = () => {}
  const fetching = new Promise<void>((resolve) => {
    started = resolve
  })
  const gate = new Promise<void>((resolve) => {
    open = resolve
  })
  const activator: Activator = {
    kind: inner.kind,
    fetch: async (manifest, onProgress, signal, log) => {
      started()
      await raceSignal(gate, signal)
      return inner.fetch(manifest, onProgress, signal, log)
    },
    prepare: (m, artifact) => inner.prepare(m, artifact),
    switchTo: (gen) => inner.switchTo(gen),
    activate: (gen, previous) => inner.activate(gen, previous),
    current: () => inner.current(),
    list: () => inner.list(),
    previousOf: (gen) => inner.previousOf(gen),
    gc: (keep, protect) => inner.gc(keep, protect),
  }
  return { activator, fetching, open }
}

describe('a revocation during an update', () => {
  let server: BlobServer
  let dir: string
  let list: RevocationChain
  let reports: ReportBody[]
  let updater: Updater | undefined

  beforeAll(async () => {
    server = await startBlobServer()
  })
  afterAll(() => server.close())
  beforeEach(async () => {
    dir = await tempDir()
    list = new RevocationChain({ fleetRoot: fleet.root.publicKey, fleetId: fleet.fleetId })
    reports = []
  })
  afterEach(async () => {
    await updater?.close()
    await removeDir(dir)
  })

  async function start(synced?: (signal: AbortSignal) => Promise<void>) {
    const { stateDir, root, hookLog } = agentLayout(dir)
    const gated = gatedFetch(profileActivator({ root, fetcher: httpBlobFetcher(), fetchAttempts: 1 }))
    updater = await createUpdater({
      stateDir,
      trust: () => ({ ...fleet.trust, revocations: list }),
      activator: gated.activator,
      confirm: async () => {},
      report: async (status) => {
        reports.push(status)
      },
      ...(synced !== undefined ? { revocationsSynced: synced } : {}),
    })
    const release = await signedRelease(fleet, server, dir, {
      name: 'web-1',
      sequence: 1,
      files: { activate: sh(`echo activated >> ${hookLog}`), 'version.txt': 'web-1' },
      healthCheck: { command: ['true'], timeoutMs: 5000, retries: 0, intervalMs: 0 },
    })
    return { ...gated, release, root, hookLog, updater }
  }

  const revokeDeployer = () =>
    list.append(
      sealRevocation(
        {
          v: 1,
          fleetId: fleet.fleetId,
          seq: 1,
          prev: EMPTY_HEAD.hash,
          serial: deployerSerial,
          reason: 'lost',
          at: Date.now(),
        },
        revoker,
        revokerChain,
      ),
    )

  it('stops the download when the signer is revoked meanwhile, and refuses the manifest as "revoked"', async () => {
    const { release, fetching, open, root, hookLog, updater } = await start()
    const outcome = updater.offer(release.envelope)
    await fetching
    revokeDeployer()
    updater.revocationsChanged()
    open()
    const result = await outcome
    expect(result).toMatchObject({ outcome: 'refused', error: { code: 'revoked' } })
    // stopped before a byte was fetched
    const sha = release.manifest.payload.kind === 'archive' ? release.manifest.payload.sha256 : ''
    expect(server.requests.some((r) => r.sha === sha)).toBe(false)
    expect(await readlink(join(root, 'current')).catch(() => null)).toBeNull()
    expect(await readHookLines(hookLog)).toEqual([])
    expect(reports.at(-1)).toMatchObject({ state: 'failed', error: { code: 'revoked' } })
    expect(reports.some((r) => r.state === 'activating')).toBe(false)
  })

  it('refuses before activation when the list changed during the download without a word', async () => {
    const { release, fetching, open, root, hookLog, updater } = await start()
    const outcome = updater.offer(release.envelope)
    await fetching
    revokeDeployer()
    open()
    expect(await outcome).toMatchObject({ outcome: 'refused', error: { code: 'revoked' } })
    expect(await readlink(join(root, 'current')).catch(() => null)).toBeNull()
    expect(await readHookLines(hookLog)).toEqual([])
  })

  it('activates nothing until the revocation list has been heard, then checks against it', async () => {
    let heard: () => void = () => {}
    const hearing = new Promise<void>((resolve) => {
      heard = resolve
    })
    let waiting: () => void = () => {}
    const waited = new Promise<void>((resolve) => {
      waiting = resolve
    })
    const { release, open, root, hookLog, updater } = await start((signal) => {
      waiting()
      return raceSignal(hearing, signal)
    })
    const outcome = updater.offer(release.envelope)
    open()
    await waited
    expect(reports.some((r) => r.state === 'activating')).toBe(false)
    // what the coordinator's list brought: the signer's revocation
    revokeDeployer()
    heard()
    expect(await outcome).toMatchObject({ outcome: 'refused', error: { code: 'revoked' } })
    expect(await readlink(join(root, 'current')).catch(() => null)).toBeNull()
    expect(await readHookLines(hookLog)).toEqual([])
  })
})
