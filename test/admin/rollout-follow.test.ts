// Following a rollout in waves renders the `rollout` events of its watch
// stream, against a scripted coordinator that offers nothing but `watch` (the
// old follower asked rollout-show every second): a line per change, the exit
// code it ends with, a clear refusal when no wave view comes, the --timeout
// message, and `watch --rollout` choosing waves or machines from the stream.
import { describe, expect, it } from 'vitest'
import { followWaves, MAX_WAIT_MS } from '../../admin/commands/rollout-follow.ts'
import { watchRollout } from '../../admin/commands/watch.ts'
import { EXIT } from '../../admin/rollout-outcome.ts'
import type { RolloutView, WatchEvent } from '../../protocol/index.ts'
import { captureOutput, scriptedWatch } from '../../testkit/scripted-watch.ts'

const X = 'a'.repeat(32)

const view = (over: Partial<RolloutView>): RolloutView => ({
  rolloutId: X,
  manifestId: 'c'.repeat(32),
  generation: 'v2',
  state: 'running',
  reason: null,
  policy: {
    waves: [{ count: 1 }, { percent: 100 }],
    maxFailures: { count: 0 },
    soakMs: 0,
    onFailure: 'halt',
    canaryTag: null,
    offlineTimeoutMs: 60_000,
  },
  wave: 0,
  waves: 2,
  createdAt: 0,
  waveStartedAt: 0,
  soakStartedAt: null,
  rolledBack: false,
  counts: { waiting: 2, pending: 1, done: 0, failed: 0, skipped: 0, withheld: 0 },
  machines: [],
  ...over,
})

const rollout = (over: Partial<RolloutView>): WatchEvent => ({ type: 'rollout', rollout: view(over) })

const { out } = captureOutput()

describe('followWaves', () => {
  it('prints a line per pushed change and ends with the rollout', async () => {
    const lines: string[] = []
    const client = scriptedWatch([
      rollout({}),
      { type: 'snapshot', machines: [] },
      rollout({ counts: { waiting: 2, pending: 0, done: 1, failed: 0, skipped: 0, withheld: 0 } }),
      rollout({ wave: 1, counts: { waiting: 0, pending: 2, done: 1, failed: 0, skipped: 0, withheld: 0 } }),
      rollout({
        wave: 1,
        state: 'done',
        counts: { waiting: 0, pending: 0, done: 3, failed: 0, skipped: 0, withheld: 0 },
      }),
    ])
    expect(await followWaves(client, X, null, false, (l) => lines.push(l))).toBe(EXIT.committed)
    expect(lines).toEqual([
      `rollout ${X} running: wave 1 of 2: 0 done, 0 failed, 1 pending, 0 skipped, 2 waiting`,
      `rollout ${X} running: wave 1 of 2: 1 done, 0 failed, 0 pending, 0 skipped, 2 waiting`,
      `rollout ${X} running: wave 2 of 2: 1 done, 0 failed, 2 pending, 0 skipped, 0 waiting`,
    ])
    expect(out.join('')).toBe(
      `rollout ${X} done: wave 2 of 2: 3 done, 0 failed, 0 pending, 0 skipped, 0 waiting\n`,
    )
  })

  it('exits 5 with the reason when the rollout halts', async () => {
    const reason = '1 of 1 machine(s) of wave 1 failed (at most 0 allowed)'
    const client = scriptedWatch([rollout({ state: 'halted', reason })])
    expect(await followWaves(client, X, null, true, () => {})).toBe(EXIT.halted)
    expect(JSON.parse(out.join(''))).toMatchObject({ state: 'halted', reason })
  })

  it('refuses a rollout the coordinator sends no wave view for', async () => {
    const client = scriptedWatch([{ type: 'snapshot', machines: [] }])
    await expect(followWaves(client, X, null, false, () => {})).rejects.toThrow(
      /no rollout in waves a{32}, or your certificate does not cover all its machines/,
    )
  })

  it('gives up after its timeout, saying where the rollout stood', async () => {
    const client = scriptedWatch([rollout({})])
    expect(await followWaves(client, X, 100, false, () => {})).toBe(EXIT.timedOut)
    const text = out.join('')
    expect(text).toContain(`rollout ${X} running: wave 1 of 2`)
    expect(text).toContain(`gave up watching rollout ${X} after 100 ms (--timeout); it goes on`)
  })

  it('without a timeout waits in slices a timer accepts', async () => {
    const client = scriptedWatch([rollout({}), rollout({ state: 'aborted', reason: 'abort by x' })])
    expect(await followWaves(client, X, null, false, () => {})).toBe(EXIT.halted)
    expect(client.waits).toEqual([MAX_WAIT_MS, MAX_WAIT_MS])
  })
})

describe('watchRollout', () => {
  it('leaves rollout events to followWaves and follows the machines', async () => {
    const client = scriptedWatch([rollout({}), { type: 'snapshot', machines: [] }])
    expect(await watchRollout(client, X, [], 60_000, false)).toBe(EXIT.noMachines)
  })
})
