/**
 * The replay high-water mark (the highest manifest sequence the agent ever
 * attempted) survives losing update.json: it is also derived from the signed
 * manifests the agent keeps, so deleting or moving aside a damaged update.json
 * never lets an older signed manifest be applied again (a downgrade).
 */
import { readdir, readlink, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Activator, GenerationInfo } from '../../agent/activator.ts'
import { httpBlobFetcher } from '../../agent/blob-fetcher.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { createUpdater, type ReportBody, type Updater } from '../../agent/updater.ts'
import type { Manifest } from '../../protocol/messages.ts'
import { sh } from '../../testkit/archives.ts'
import { type BlobServer, makeFleet, removeDir, startBlobServer, tempDir } from './fixtures.ts'
import { agentLayout, type Release, signedRelease } from './releases.ts'

const fleet = makeFleet()

describe('the replay high-water mark', () => {
  let server: BlobServer
  let dir: string
  let stateDir: string
  let root: string
  let reports: ReportBody[]
  let updater: Updater | undefined

  beforeAll(async () => {
    server = await startBlobServer()
  })
  afterAll(() => server.close())
  beforeEach(async () => {
    dir = await tempDir()
    ;({ stateDir, root } = agentLayout(dir))
    reports = []
  })
  afterEach(async () => {
    await updater?.close()
    updater = undefined
    await removeDir(dir)
  })

  async function open(activator: Activator = profileActivator({ root, fetcher: httpBlobFetcher() })) {
    await updater?.close()
    updater = await createUpdater({
      stateDir,
      trust: fleet.trust,
      activator,
      confirm: async () => {},
      report: async (status) => {
        reports.push(status)
      },
    })
    return updater
  }

  const release = (name: string, sequence: number): Promise<Release> =>
    signedRelease(fleet, server, dir, {
      name,
      sequence,
      files: { health: sh('exit 0'), 'version.txt': name },
      healthCheck: { command: ['./health'], timeoutMs: 5000, retries: 0, intervalMs: 10 },
    })

  /** Installs web-1 (sequence 1) and web-2 (sequence 2), then stops the updater. */
  async function installTwo(): Promise<{ v1: Release; v2: Release }> {
    const u = await open()
    const v1 = await release('web-1', 1)
    const v2 = await release('web-2', 2)
    expect((await u.offer(v1.envelope)).outcome).toBe('committed')
    expect((await u.offer(v2.envelope)).outcome).toBe('committed')
    await u.close()
    updater = undefined
    return { v1, v2 }
  }

  it('still refuses an older manifest after update.json is deleted', async () => {
    const { v1, v2 } = await installTwo()
    await rm(join(stateDir, 'update.json'))
    const u = await open()
    expect(u.current().lastSequence).toBe(2)
    const outcome = await u.offer(v1.envelope)
    expect(outcome).toMatchObject({ outcome: 'refused', error: { code: 'replayed' } })
    expect(await readlink(join(root, 'current'))).toContain('web-2')
    // The coordinator re-sends the current manifest on every reconnect: that is no replay.
    reports.length = 0
    expect((await u.offer(v2.envelope)).outcome).toBe('ignored')
    expect(reports.filter((r) => r.state === 'refused')).toEqual([])
  })

  it('stops on a damaged update.json with advice that keeps the mark, which holds once it is moved aside', async () => {
    const { v1 } = await installTwo()
    await writeFile(join(stateDir, 'update.json'), '{"v":1,"lastSeq')
    const err = await open().catch((e: unknown) => e as Error)
    expect(err).toBeInstanceOf(Error)
    const message = (err as Error).message
    expect(message).toContain(join(stateDir, 'update.json'))
    expect(message).toContain('sequence 2')
    expect(message).toContain(join(stateDir, 'manifests'))
    expect(message).not.toContain('fix it or move it aside')

    await rename(join(stateDir, 'update.json'), join(dir, 'update.json.damaged'))
    const u = await open()
    expect((await u.offer(v1.envelope)).outcome).toBe('refused')
    expect(await readlink(join(root, 'current'))).toContain('web-2')
  })

  it('counts manifests that never made a generation, whatever the activator', async () => {
    const activator = memoryActivator({ failFetch: new Set([3]) })
    const u = await open(activator)
    const signed = (sequence: number) =>
      fleet.sign(fleet.manifest({ sequence, generation: `web-${sequence}` }))
    expect((await u.offer(signed(1))).outcome).toBe('committed')
    expect((await u.offer(signed(3))).outcome).toBe('failed')
    await u.close()
    updater = undefined
    await rm(join(stateDir, 'update.json'))

    const again = await open(activator)
    expect(again.current().lastSequence).toBe(3)
    expect(await again.offer(signed(2))).toMatchObject({ outcome: 'refused', error: { code: 'replayed' } })
    expect((await again.offer(signed(4))).outcome).toBe('committed')
    // only a few signed manifests are kept, the newest always among them
    expect((await readdir(join(stateDir, 'manifests'))).length).toBeGreaterThan(0)
  })
})

/** An activator that keeps nothing on disk (as a NixOS profile keeps only store paths). */
function memoryActivator(options: { failFetch: ReadonlySet<number> }): Activator {
  const generations: GenerationInfo[] = []
  let current: GenerationInfo | null = null
  return {
    kind: 'memory',
    async fetch(manifest: Manifest) {
      if (options.failFetch.has(manifest.sequence)) throw new Error('no such payload')
      return ''
    },
    async prepare(manifest: Manifest) {
      const gen = { id: manifest.id, name: manifest.generation, path: '/', manifestId: manifest.id }
      generations.push(gen)
      return gen
    },
    async switchTo(gen) {
      current = gen
    },
    async activate() {
      return {}
    },
    async current() {
      return current
    },
    async list() {
      return [...generations]
    },
    async previousOf(gen) {
      return generations[generations.indexOf(gen) - 1] ?? null
    },
    async gc() {
      return []
    },
  }
}
