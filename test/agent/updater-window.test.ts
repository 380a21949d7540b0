// Maintenance windows in the updater, on an injected clock and sleep: an update
// downloads and prepares at once, reports `waiting-for-window` with when the
// window opens, switches nothing until the clock reaches the opening, and then
// activates and commits; a newer manifest cuts the wait, and a restart while
// waiting comes back to waiting.
import { readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { httpBlobFetcher } from '../../agent/blob-fetcher.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { createUpdater, type ReportBody, type Updater } from '../../agent/updater.ts'
import type { MaintenanceWindow, Manifest } from '../../protocol/index.ts'
import { sh } from '../../testkit/archives.ts'
import { type BlobServer, makeFleet, removeDir, startBlobServer, tempDir, waitFor } from './fixtures.ts'
import { agentLayout, readHookLines, readUpdateJson, signedRelease } from './releases.ts'

const fleet = makeFleet()
const MINUTE = 60_000
const HOUR_MS = 60 * MINUTE

/** A clock the test moves, and a sleep that lasts until the test moves it (or the signal aborts). */
class TestClock {
  now = Date.now()
  readonly naps: { ms: number; end: () => void }[] = []
  sleep = (ms: number, signal: AbortSignal): Promise<void> =>
    new Promise((resolve, reject) => {
      const nap = { ms, end: resolve }
      this.naps.push(nap)
      signal.addEventListener(
        'abort',
        () => {
          this.naps.splice(this.naps.indexOf(nap), 1)
          reject(signal.reason)
        },
        { once: true },
      )
    })
  /** Sets the clock and ends the naps in progress, so the waiter looks at it again. */
  set(to: number): void {
    this.now = to
    for (const nap of this.naps.splice(0)) nap.end()
  }
}

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16)

/** A window for `tag` opening `inMs` after `from` (rounded up to the minute, UTC) and lasting ten minutes. */
function windowFrom(from: number, inMs: number, tag = 'lab'): { window: MaintenanceWindow; opensAt: number } {
  const opensAt = Math.ceil((from + inMs) / MINUTE) * MINUTE
  return { window: { tag, start: hhmm(opensAt), end: hhmm(opensAt + 10 * MINUTE) }, opensAt }
}

describe('updater with maintenance windows', () => {
  let server: BlobServer
  let dir: string
  let stateDir: string
  let root: string
  let hookLog: string
  let reports: ReportBody[]
  let clock: TestClock
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
    clock = new TestClock()
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
      confirm: async () => {},
      report: async (status) => {
        reports.push(status)
      },
      now: () => clock.now,
      sleep: clock.sleep,
      timeZone: 'UTC',
      progressIntervalMs: 0,
    })
  }

  async function release(name: string, manifest: Partial<Manifest> = {}) {
    sequence += 1
    return signedRelease(fleet, server, dir, {
      name,
      sequence,
      files: { activate: sh(`echo "${name} activated" >> ${hookLog}`), health: sh('exit 0') },
      healthCheck: { command: ['./health'], timeoutMs: 5000, retries: 0, intervalMs: 10 },
      manifest,
    })
  }

  const states = () => reports.filter((r) => r.progress === null).map((r) => r.state)
  const currentLink = () => readlink(join(root, 'current')).catch(() => null)
  const waiting = () => waitFor(() => clock.naps.length > 0, 'the updater to wait for its window')

  async function installFirst(): Promise<void> {
    const a = await release('web-a')
    expect((await updater.offer(a.envelope)).outcome).toBe('committed')
    reports.length = 0
  }

  it('prepares at once, waits for the window without switching, then activates and commits', async () => {
    await installFirst()
    const { window, opensAt } = windowFrom(clock.now, 30 * MINUTE)
    const b = await release('web-b', { windows: [window] })
    const outcome = updater.offer(b.envelope)
    await waiting()
    expect(states()).toEqual(['downloading', 'verified', 'waiting-for-window'])
    const report = reports.at(-1)
    expect(report).toMatchObject({ currentGeneration: 'web-a', desiredGeneration: 'web-b', error: null })
    expect(report?.log).toContain(`the next opens ${new Date(opensAt).toISOString()} (UTC)`)
    expect(clock.naps[0]?.ms).toBeLessThanOrEqual(MINUTE)
    expect((await readUpdateJson(stateDir)).update.step).toBe('waiting-for-window')
    expect(updater.current().state).toBe('waiting-for-window')

    clock.set(opensAt - 1000)
    await waiting()
    expect(await currentLink()).toBe('generations/1-web-a')
    expect(await readHookLines(hookLog)).toEqual(['web-a activated'])

    clock.set(opensAt)
    expect((await outcome).outcome).toBe('committed')
    expect(states()).toEqual([
      'downloading',
      'verified',
      'waiting-for-window',
      'activating',
      'confirming',
      'committed',
    ])
    expect(await currentLink()).toBe('generations/2-web-b')
    expect(await readHookLines(hookLog)).toEqual(['web-a activated', 'web-b activated'])
  })

  it('activates at once inside the window, and when no window names a tag of the machine', async () => {
    await installFirst()
    const open = windowFrom(clock.now, -MINUTE).window
    const b = await release('web-b', { windows: [open, windowFrom(clock.now, HOUR_MS).window] })
    expect((await updater.offer(b.envelope)).outcome).toBe('committed')
    const c = await release('web-c', { windows: [windowFrom(clock.now, 30 * MINUTE, 'other').window] })
    expect((await updater.offer(c.envelope)).outcome).toBe('committed')
    expect(states()).not.toContain('waiting-for-window')
    expect(clock.naps).toEqual([])
  })

  it('gives way to a newer manifest while waiting; the re-sent current one does not cut the wait', async () => {
    await installFirst()
    const { window, opensAt } = windowFrom(clock.now, 30 * MINUTE)
    const b = await release('web-b', { windows: [window] })
    let settled = false
    const waited = updater.offer(b.envelope).finally(() => {
      settled = true
    })
    await waiting()
    // the coordinator re-sends the current manifest on every reconnect: the wait goes on
    const resent = updater.offer(b.envelope)
    clock.set(opensAt - 1000)
    await waiting()
    expect(settled).toBe(false)
    const c = await release('web-c')
    const outcome = await updater.offer(c.envelope)
    expect(await waited).toMatchObject({ outcome: 'superseded', manifestId: b.manifest.id })
    expect((await resent).outcome).toBe('ignored')
    expect(outcome.outcome).toBe('committed')
    expect(await readHookLines(hookLog)).toEqual(['web-a activated', 'web-c activated'])
  })

  it('comes back to waiting after a restart, and activates once the window opens', async () => {
    await installFirst()
    const { window, opensAt } = windowFrom(clock.now, 30 * MINUTE)
    const b = await release('web-b', { windows: [window] })
    const first = updater.offer(b.envelope).catch((err: unknown) => err)
    await waiting()
    await updater.close()
    expect(await first).toBeInstanceOf(Error)
    reports.length = 0

    updater = await open()
    expect(await updater.recover()).toEqual({
      outcome: 'waiting-for-window',
      manifestId: b.manifest.id,
      error: null,
    })
    expect(states()).toEqual(['waiting-for-window'])
    await waiting()
    expect(await currentLink()).toBe('generations/1-web-a')

    clock.set(opensAt)
    await waitFor(() => states().includes('committed'), 'the commit')
    expect(states()).toEqual(['waiting-for-window', 'activating', 'confirming', 'committed'])
    expect(await currentLink()).toBe('generations/2-web-b')
  })
})
