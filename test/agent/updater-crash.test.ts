/**
 * kill -9 at the worst moments, with real processes: the agent (updater-child.ts)
 * is SIGKILLed mid-activation and mid-download, and a fresh process's recover()
 * must leave the device on a whole generation.
 */
import { randomBytes } from 'node:crypto'
import { readFile, readlink, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { Outbox } from '../../agent/outbox.ts'
import type { ReportBody } from '../../agent/updater.ts'
import { type FileSpec, sh } from '../../testkit/archives.ts'
import { parseResult, startChild } from './child-process.ts'
import {
  type BlobServer,
  isAlive,
  makeFleet,
  removeDir,
  startBlobServer,
  tempDir,
  waitFor,
} from './fixtures.ts'
import { agentLayout, readHookLines, readUpdateJson, signedRelease } from './releases.ts'
import type { ChildConfig } from './updater-child.ts'

const fleet = makeFleet()

describe('crash recovery (kill -9)', () => {
  let server: BlobServer
  let dir: string
  let stateDir: string
  let root: string
  let hookLog: string
  let sequence: number
  const strayGroups: number[] = []

  beforeAll(async () => {
    server = await startBlobServer()
  })
  afterAll(() => server.close())
  beforeEach(async () => {
    dir = await tempDir()
    ;({ stateDir, root, hookLog } = agentLayout(dir))
    sequence = 0
  })
  afterEach(async () => {
    for (const pgid of strayGroups.splice(0)) {
      try {
        process.kill(-pgid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    await removeDir(dir)
  })

  async function config(action: ChildConfig['action'], envelope?: Uint8Array): Promise<string> {
    const path = join(dir, `child-${randomBytes(4).toString('hex')}.json`)
    let envelopePath: string | undefined
    if (envelope !== undefined) {
      envelopePath = `${path}.envelope`
      await writeFile(envelopePath, envelope)
    }
    const cfg: ChildConfig = {
      action,
      stateDir,
      profileRoot: root,
      fleetRoot: fleet.root.publicKey.toString(),
      fleetId: fleet.fleetId,
      machine: fleet.machine,
      tags: fleet.tags,
      ...(envelopePath !== undefined ? { envelopePath } : {}),
    }
    await writeFile(path, JSON.stringify(cfg))
    return path
  }

  async function release(name: string, files: Record<string, FileSpec>) {
    sequence += 1
    return signedRelease(fleet, server, dir, {
      name,
      sequence,
      files: { health: sh('exit 0'), ...files },
      healthCheck: { command: ['./health'], timeoutMs: 5000, retries: 0, intervalMs: 0 },
    })
  }

  async function reports(): Promise<ReportBody[]> {
    const outbox = await Outbox.open(stateDir)
    return (await outbox.pending()).map((p) => JSON.parse(new TextDecoder().decode(p.envelope)) as ReportBody)
  }

  const updateJson = () => readUpdateJson(stateDir)
  const hookLines = () => readHookLines(hookLog)

  it('rolls back to the previous whole generation after a kill during activation', async () => {
    const a = await release('web-a', { activate: sh(`echo "web-a activated" >> ${hookLog}`) })
    const first = parseResult(await startChild(await config('offer', a.envelope)).exited)
    expect(first.outcome?.outcome).toBe('committed')
    expect(await readlink(join(root, 'current'))).toBe('generations/1-web-a')

    // B's hook announces itself, then blocks until it is killed.
    const marker = join(dir, 'hook-started')
    const b = await release('web-b', {
      activate: sh(
        `echo "web-b started" >> ${hookLog}\necho $$ > ${marker}.tmp && mv ${marker}.tmp ${marker}\nexec sleep 60`,
      ),
    })
    const second = startChild(await config('offer', b.envelope))
    const hookPid = await waitFor(
      async () => Number((await readFile(marker, 'utf8').catch(() => '')).trim()) || undefined,
      'the activate hook of web-b to start',
    )
    strayGroups.push(hookPid)
    second.child.kill('SIGKILL')
    expect((await second.exited).signal).toBe('SIGKILL')
    process.kill(-hookPid, 'SIGKILL')
    await waitFor(async () => !(await isAlive(hookPid)), 'the stuck hook to die')

    // The crash left the device half-way: the link already points at web-b, whose activation never finished.
    expect((await updateJson()).update.step).toBe('activating')
    expect(await readlink(join(root, 'current'))).toBe('generations/2-web-b')

    const recovered = parseResult(await startChild(await config('recover')).exited)
    expect(recovered.outcome).toMatchObject({ outcome: 'rolled-back', error: { code: 'interrupted' } })
    expect(recovered.current).toMatchObject({ generation: 'web-a', state: 'rolled-back', lastSequence: 2 })

    expect(await readlink(join(root, 'current'))).toBe('generations/1-web-a')
    expect(await readFile(join(root, 'current', 'health'), 'utf8')).toMatch(/exit 0/)
    const update = (await updateJson()).update
    expect(update).toMatchObject({
      step: 'rolled-back',
      manifestId: b.manifest.id,
      error: { code: 'interrupted' },
    })
    expect(update.error.message).toMatch(/while activating generation "web-b"/)
    expect(await hookLines()).toEqual(['web-a activated', 'web-b started', 'web-a activated'])

    const transitions = (await reports()).filter((r) => r.progress === null)
    const forB = transitions.filter((r) => r.manifestId === b.manifest.id).map((r) => r.state)
    expect(forB).toEqual(['downloading', 'verified', 'activating', 'rolling-back', 'rolled-back'])
    expect(transitions.at(-1)).toMatchObject({
      state: 'rolled-back',
      currentGeneration: 'web-a',
      desiredGeneration: 'web-b',
      error: { code: 'interrupted' },
    })
  })

  it('resumes an interrupted download where it stopped and completes the update', async () => {
    const big = randomBytes(2 * 1024 * 1024).toString('base64')
    const c = await release('web-big', {
      'payload.bin': big,
      activate: sh(`echo "web-big activated" >> ${hookLog}`),
    })
    const stallAt = Math.floor(c.archive.size / 2)
    server.stallOnce(c.archive.sha256, stallAt)

    const first = startChild(await config('offer', c.envelope))
    const part = join(root, 'downloads', `${c.archive.sha256}.part`)
    await waitFor(
      async () => ((await stat(part).catch(() => undefined))?.size ?? 0) >= stallAt,
      'half of the archive to be downloaded',
    )
    first.child.kill('SIGKILL')
    await first.exited
    expect((await updateJson()).update.step).toBe('downloading')
    await expect(readlink(join(root, 'current'))).rejects.toThrow()

    const recovered = parseResult(await startChild(await config('recover')).exited)
    expect(recovered.outcome).toMatchObject({ outcome: 'committed', manifestId: c.manifest.id })
    const resumed = server.requests.filter((r) => r.sha === c.archive.sha256)
    expect(resumed.map((r) => r.range)).toEqual([null, `bytes=${stallAt}-`])
    expect(await readlink(join(root, 'current'))).toBe('generations/1-web-big')
    expect(await readFile(join(root, 'current', 'payload.bin'), 'utf8')).toBe(big)
    expect(await hookLines()).toEqual(['web-big activated'])

    const states = (await reports()).filter((r) => r.progress === null).map((r) => r.state)
    expect(states).toEqual([
      'downloading',
      'downloading',
      'verified',
      'activating',
      'confirming',
      'committed',
    ])
    expect((await updateJson()).update).toMatchObject({ step: 'committed', attempt: 1 })
  })
})
