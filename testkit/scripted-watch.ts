/**
 * Stand-ins for the admin-side watch tests: a coordinator that streams scripted
 * events, and the CLI's stdout/stderr collected instead of printed. Mocks of the
 * coordinator's watch stream, named as such; the real stream is covered by the
 * real-process tests.
 */
import { afterEach, beforeEach, vi } from 'vitest'
import type { AdminWatch } from '../admin/client.ts'
import type { WatchEvent } from '../protocol/index.ts'

/** The longest delay a Node timer takes; the real stream's wait uses one. */
const TIMER_MAX_MS = 2 ** 31 - 1

/**
 * A coordinator that sends each stream's events (one list per `watch()` call),
 * then stays silent until the watch times out. It records every wait asked of it
 * in `waits`, and refuses one a timer would not take, as the real stream would.
 */
export function scriptedWatch(...streams: WatchEvent[][]) {
  let opened = 0
  const waits: number[] = []
  return {
    waits,
    opened: () => opened,
    watch: async (): Promise<AdminWatch> => {
      const events = [...(streams[opened++] ?? [])]
      return {
        next: async (timeoutMs: number): Promise<WatchEvent> => {
          waits.push(timeoutMs)
          if (!(timeoutMs >= 1 && timeoutMs <= TIMER_MAX_MS)) throw new RangeError(`delay ${timeoutMs}`)
          const e = events.shift()
          if (e !== undefined) return e
          await new Promise((r) => setTimeout(r, Math.min(timeoutMs, 20)))
          throw Object.assign(new Error('no event'), { name: 'TimeoutError' })
        },
        close: () => {},
      }
    },
  }
}

/** What the code under test writes to stdout and stderr, per test (registers its own hooks). */
export function captureOutput(): { out: string[]; err: string[] } {
  const captured = { out: [] as string[], err: [] as string[] }
  beforeEach(() => {
    captured.out.length = 0
    captured.err.length = 0
    vi.spyOn(process.stdout, 'write').mockImplementation((s) => captured.out.push(String(s)) > 0)
    vi.spyOn(process.stderr, 'write').mockImplementation((s) => captured.err.push(String(s)) > 0)
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })
  return captured
}
