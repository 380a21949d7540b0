// `fleetmesh watch` without --timeout follows the fleet without a deadline: it
// must never hand a timer more than Node accepts (2^31-1 ms), which used to
// crash it with ERR_OUT_OF_RANGE before the first event.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { AdminWatch } from '../../admin/client.ts'
import { MAX_WAIT_MS, watchRollout } from '../../admin/commands/watch.ts'
import type { WatchEvent } from '../../protocol/index.ts'

class StreamEnded extends Error {}

/** A watch that records each wait it is asked for, the way setTimeout would check it, then ends. */
function fakeClient(waits: number[]) {
  return {
    watch: async (): Promise<AdminWatch> => ({
      next: async (timeoutMs: number): Promise<WatchEvent> => {
        waits.push(timeoutMs)
        // setTimeout's own check: beyond this Node throws RangeError ERR_OUT_OF_RANGE
        if (!(timeoutMs >= 1 && timeoutMs <= 2 ** 31 - 1)) throw new RangeError(`delay ${timeoutMs}`)
        if (waits.length === 1) return { type: 'snapshot', machines: [] }
        throw new StreamEnded('end of test')
      },
      close: () => {},
    }),
  }
}

beforeEach(() => {
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
})
afterEach(() => {
  vi.restoreAllMocks()
})

describe('watchRollout waits', () => {
  it('without a deadline waits in slices a timer accepts', async () => {
    const waits: number[] = []
    await expect(watchRollout(fakeClient(waits), null, [], null, false)).rejects.toBeInstanceOf(StreamEnded)
    expect(waits).toEqual([MAX_WAIT_MS, MAX_WAIT_MS])
  })

  it('clamps a --timeout longer than a timer can hold', async () => {
    const waits: number[] = []
    await expect(watchRollout(fakeClient(waits), null, [], 365 * 86_400_000, false)).rejects.toBeInstanceOf(
      StreamEnded,
    )
    expect(waits.every((w) => w <= MAX_WAIT_MS)).toBe(true)
  })
})
