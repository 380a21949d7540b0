import { readdir, readFile, readlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { httpBlobFetcher } from '../../agent/blob-fetcher.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { createUpdater, type ReportBody, type Updater, type UpdaterInit } from '../../agent/updater.ts'
import type { Manifest } from '../../protocol/messages.ts'
import { type FileSpec, makeTar, sh } from '../../testkit/archives.ts'
import {
  type BlobServer,
  makeFleet,
  removeDir,
  servedPayload,
  startBlobServer,
  tempDir,
  waitFor,
} from './fixtures.ts'
import { agentLayout, readHookLines, readUpdateJson, signedRelease } from './releases.ts'

const fleet = makeFleet()

describe('updater with the profile activator', () => {
  let server: BlobServer
  let dir: string
  let stateDir: string
  let root: string
  let hookLog: string
  let reports: ReportBody[]
  let confirm: UpdaterInit['confirm']
  let updater: Updater
  let sequence: number

  beforeAll(async () => {
    server = await startBlobServer()
  })
  afterAll(() => server.close())

  beforeEach(async () => {
    dir = await tempDir()
    ;({ stateDir, root, hookLog } = agentLayout(dir))
    reports = []
    confirm = async () => {}
    sequence = 0
    updater = await open()
  })
  afterEach(async () => {
    await updater.close()
    await removeDir(dir)
  })

  function open(): Promise<Updater> {
    return createUpdater({
      stateDir,
      trust: fleet.trust,
      activator: profileActivator({ root, fetcher: httpBlobFetcher(), fetchAttempts: 1 }),
      confirm: (signal) => confirm(signal),
      report: async (status) => {
        reports.push(status)
      },
      progressIntervalMs: 0,
    })
  }

  /** A generation whose activate hook logs "<name> activated" and whose health check exits `health`. */
  async function release(
    name: string,
    options: { health?: number; files?: Record<string, FileSpec>; manifest?: Partial<Manifest> } = {},
  ): Promise<{ manifest: Manifest; envelope: Uint8Array }> {
    sequence += 1
    return signedRelease(fleet, server, dir, {
      name,
      sequence,
      files: {
        activate: sh(`echo "${name} activated" >> ${hookLog}`),
        health: sh(`exit ${options.health ?? 0}`),
        'version.txt': name,
        ...options.files,
      },
      healthCheck: { command: ['./health'], timeoutMs: 5000, retries: 1, intervalMs: 10 },
      manifest: options.manifest,
    })
  }

  const states = () => reports.filter((r) => r.progress === null).map((r) => r.state)
  const currentLink = () => readlink(join(root, 'current')).catch(() => null)
  const updateJson = () => readUpdateJson(stateDir)
  const hookLines = () => readHookLines(hookLog)

  async function installFirst(): Promise<string> {
    const a = await release('web-a')
    expect((await updater.offer(a.envelope)).outcome).toBe('committed')
    reports.length = 0
    return (await currentLink()) as string
  }

  it('downloads, verifies, activates, checks health, confirms and commits', async () => {
    const { manifest, envelope } = await release('web-1')
    const outcome = await updater.offer(envelope)
    expect(outcome).toEqual({ outcome: 'committed', manifestId: manifest.id, error: null })
    expect(states()).toEqual(['downloading', 'verified', 'activating', 'confirming', 'committed'])
    const progress = reports.filter((r) => r.progress !== null)
    expect(progress.length).toBeGreaterThan(0)
    const size = manifest.payload.kind === 'archive' ? manifest.payload.size : -1
    expect(progress.at(-1)?.progress).toEqual({ done: size, total: size })

    expect(await currentLink()).toBe('generations/1-web-1')
    expect(await readFile(join(root, 'current', 'version.txt'), 'utf8')).toBe('web-1')
    expect(await hookLines()).toEqual(['web-1 activated'])
    const last = reports.at(-1)
    expect(last).toMatchObject({
      state: 'committed',
      currentGeneration: 'web-1',
      desiredGeneration: 'web-1',
      manifestId: manifest.id,
      manifestSequence: 1,
      rolloutId: manifest.rolloutId,
      error: null,
    })
    expect(updater.current()).toMatchObject({ generation: 'web-1', state: 'committed', lastSequence: 1 })
    expect((await updateJson()).update.step).toBe('committed')
    // The downloaded archive is not kept once unpacked.
    expect(await readdir(join(root, 'downloads')).catch(() => [])).toEqual([])
  })

  it('rolls back to the previous generation when the health check fails', async () => {
    const before = await installFirst()
    const b = await release('web-b', { health: 1 })
    const outcome = await updater.offer(b.envelope)
    expect(outcome.outcome).toBe('rolled-back')
    expect(outcome.error?.code).toBe('health-check-failed')
    expect(await currentLink()).toBe(before)
    // The previous generation's hook ran again on the way back.
    expect(await hookLines()).toEqual(['web-a activated', 'web-b activated', 'web-a activated'])
    expect(states()).toEqual([
      'downloading',
      'verified',
      'activating',
      'confirming',
      'rolling-back',
      'rolled-back',
    ])
    const last = reports.at(-1)
    expect(last).toMatchObject({
      state: 'rolled-back',
      currentGeneration: 'web-a',
      desiredGeneration: 'web-b',
    })
    expect(last?.error?.message).toMatch(/failed 2 times.*exited with status 1/)
    expect(updater.current()).toMatchObject({ generation: 'web-a', state: 'rolled-back', lastSequence: 2 })
    expect((await updateJson()).update).toMatchObject({
      step: 'rolled-back',
      error: { code: 'health-check-failed' },
    })
  })

  it('rolls back when the coordinator round-trip fails or times out', async () => {
    const before = await installFirst()
    confirm = async () => {
      throw new Error('stream reset')
    }
    const b = await release('web-b')
    const rejected = await updater.offer(b.envelope)
    expect(rejected.outcome).toBe('rolled-back')
    expect(rejected.error).toMatchObject({
      code: 'confirm-timeout',
      message: expect.stringMatching(/stream reset/),
    })
    expect(await currentLink()).toBe(before)

    let aborted = false
    confirm = (signal) =>
      new Promise((_, reject) =>
        signal.addEventListener('abort', () => {
          aborted = true
          reject(new Error('aborted'))
        }),
      )
    const c = await release('web-c', { manifest: { confirmTimeoutMs: 1000 } })
    const timedOut = await updater.offer(c.envelope)
    expect(timedOut.error).toMatchObject({
      code: 'confirm-timeout',
      message: expect.stringMatching(/within 1000 ms/),
    })
    expect(aborted).toBe(true)
    expect(await currentLink()).toBe(before)
  })

  it('rolls back when the activate hook fails', async () => {
    const before = await installFirst()
    const b = await release('web-b', { files: { activate: sh('echo port in use >&2; exit 1') } })
    const outcome = await updater.offer(b.envelope)
    expect(outcome.error?.code).toBe('activation-failed')
    expect(outcome.error?.message).toMatch(/port in use/)
    expect(await currentLink()).toBe(before)
  })

  it('rolls back a first install to no generation at all', async () => {
    const a = await release('web-a', { health: 1 })
    expect((await updater.offer(a.envelope)).outcome).toBe('rolled-back')
    expect(await currentLink()).toBeNull()
    expect(updater.current().generation).toBeNull()
  })

  it('fails on a hash mismatch without switching anything', async () => {
    const before = await installFirst()
    const b = await release('web-b')
    if (b.manifest.payload.kind !== 'archive') throw new Error('unreachable')
    const tampered = { ...b.manifest, payload: { ...b.manifest.payload, sha256: '0'.repeat(64) } }
    const outcome = await updater.offer(fleet.sign(tampered))
    expect(outcome.outcome).toBe('failed')
    expect(outcome.error?.code).toBe('artifact-mismatch')
    expect(states()).toEqual(['downloading', 'failed'])
    expect(await currentLink()).toBe(before)
    expect(await hookLines()).toEqual(['web-a activated'])
    expect((await readdir(join(root, 'generations'))).filter((n) => !n.startsWith('.'))).toEqual(['1-web-a'])
  })

  it('refuses to unpack an archive with a ../ member and switches nothing', async () => {
    const before = await installFirst()
    await writeFile(join(dir, 'evil'), 'original')
    const archive = await makeTar(dir, {}, { extraArgs: ['-P', '../evil'] })
    sequence += 1
    const manifest = fleet.manifest({ sequence, generation: 'evil', payload: servedPayload(server, archive) })
    const outcome = await updater.offer(fleet.sign(manifest))
    expect(outcome.outcome).toBe('failed')
    expect(outcome.error?.code).toBe('unsafe-archive')
    expect(states()).toEqual(['downloading', 'verified', 'failed'])
    expect(await currentLink()).toBe(before)
    expect(await readFile(join(dir, 'evil'), 'utf8')).toBe('original')
  })

  it('refuses an older sequence and ignores a re-delivery of one already attempted', async () => {
    sequence = 4
    const current = await release('web-5')
    expect((await updater.offer(current.envelope)).outcome).toBe('committed')
    reports.length = 0

    // Re-delivered as is, or re-sealed (different bytes, same manifest id): ignored quietly.
    expect((await updater.offer(current.envelope)).outcome).toBe('ignored')
    expect((await updater.offer(fleet.sign(current.manifest))).outcome).toBe('ignored')
    expect(reports).toEqual([])

    sequence = 2
    const old = await release('web-3')
    const outcome = await updater.offer(old.envelope)
    expect(outcome.outcome).toBe('refused')
    expect(outcome.error?.code).toBe('replayed')
    expect(reports).toHaveLength(1)
    expect(reports[0]).toMatchObject({
      state: 'refused',
      manifestId: old.manifest.id,
      currentGeneration: 'web-5',
    })
    expect(await currentLink()).toBe('generations/1-web-5')

    // The refusal survives a restart: lastSequence is on disk.
    await updater.close()
    updater = await open()
    expect(updater.current()).toMatchObject({ lastSequence: 5, state: 'committed', generation: 'web-5' })
    expect((await updater.offer(old.envelope)).outcome).toBe('refused')
  })

  it('refuses an unverifiable manifest without touching anything', async () => {
    const before = await installFirst()
    const stateBefore = await readFile(join(stateDir, 'update.json'), 'utf8')
    const m = await release('web-b', { manifest: { fleetId: 'globex' } })
    const outcome = await updater.offer(m.envelope)
    expect(outcome).toMatchObject({ outcome: 'refused', error: { code: 'wrong-fleet' } })
    expect(states()).toEqual(['refused'])
    expect(await readFile(join(stateDir, 'update.json'), 'utf8')).toBe(stateBefore)
    expect(await currentLink()).toBe(before)
  })

  it('finishes the running update before applying only the newest of the offers that arrived meanwhile', async () => {
    const b = await release('web-b')
    const c = await release('web-c')
    const d = await release('web-d')
    const first = updater.offer(b.envelope)
    await waitFor(() => reports.some((r) => r.state === 'activating'), 'the first update to activate')
    const [rb, rd, rc] = await Promise.all([first, updater.offer(d.envelope), updater.offer(c.envelope)])
    expect(rb.outcome).toBe('committed')
    expect(rd.outcome).toBe('committed')
    expect(rc.outcome).toBe('superseded')
    expect(await hookLines()).toEqual(['web-b activated', 'web-d activated'])
    expect(await currentLink()).toBe('generations/2-web-d')
    expect(updater.current().lastSequence).toBe(3)
  })

  it("carries what the activate hook printed in the update's reports", async () => {
    const a = await release('web-a', { files: { activate: sh('echo "web-a is up"') } })
    expect((await updater.offer(a.envelope)).outcome).toBe('committed')
    const last = reports.at(-1)
    expect(last?.state).toBe('committed')
    expect(last?.log).toMatch(/\/activate\nweb-a is up$/)
    expect(last?.rebootRequired).toBeUndefined()
    // Steps before the activation had nothing to say yet.
    expect(reports.find((r) => r.state === 'verified')?.log).toBeUndefined()
  })

  it('carries the failed output and the rollback in the rolled-back report', async () => {
    const a = await release('web-a', { files: { activate: sh('echo "web-a is up"') } })
    await updater.offer(a.envelope)
    const b = await release('web-b', { files: { activate: sh('echo "port 80 in use" >&2; exit 1') } })
    expect((await updater.offer(b.envelope)).outcome).toBe('rolled-back')
    const last = reports.at(-1)
    expect(last?.state).toBe('rolled-back')
    expect(last?.error?.code).toBe('activation-failed')
    expect(last?.log).toMatch(/port 80 in use\n.*\/activate\nweb-a is up$/s)
  })
})
