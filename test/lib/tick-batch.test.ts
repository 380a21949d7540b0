// One event-loop turn's items in one run, each caller answered on its own: what
// the SQLite store's sightings of connecting agents rely on (one transaction and
// one fsync for all who connected in that turn, an unknown machine refused alone).
import { describe, expect, it } from 'vitest'
import { TickBatch } from '../../lib/index.ts'

describe('TickBatch', () => {
  it("runs one turn's items as one batch, in order, and the next turn's as another", async () => {
    const runs: number[][] = []
    const batch = new TickBatch<number, number>((items) => {
      runs.push(items)
      return items.map((n) => n * 10)
    })
    expect(await Promise.all([batch.add(1), batch.add(2), batch.add(3)])).toEqual([10, 20, 30])
    expect(await batch.add(4)).toBe(40)
    expect(runs).toEqual([[1, 2, 3], [4]])
  })

  it('runs one batch at a time: what comes while one runs waits for the next, at most maxBatch each', async () => {
    const runs: number[][] = []
    let running = 0
    let overlapped = false
    let release!: () => void
    const firstHeld = new Promise<void>((resolve) => {
      release = resolve
    })
    const batch = new TickBatch<number, number>(async (items) => {
      runs.push(items)
      overlapped ||= running > 0
      running++
      if (runs.length === 1) await firstHeld // a commit in flight
      running--
      return items
    }, 2)
    const first = [batch.add(1)]
    await new Promise((resolve) => setImmediate(resolve)) // the first batch is running now
    const later = [2, 3, 4].map((n) => batch.add(n))
    await new Promise((resolve) => setImmediate(resolve))
    expect(runs).toEqual([[1]])
    release()
    expect(await Promise.all([...first, ...later])).toEqual([1, 2, 3, 4])
    expect(runs).toEqual([[1], [2, 3], [4]])
    expect(overlapped).toBe(false)
  })

  it('refuses an item its answer is an Error for, and only that one', async () => {
    const batch = new TickBatch<string, string>(async (items) =>
      items.map((s) => (s === 'ghost' ? new Error(`unknown machine ${s}`) : s.toUpperCase())),
    )
    const [a, ghost, b] = await Promise.allSettled([batch.add('a'), batch.add('ghost'), batch.add('b')])
    expect(a).toEqual({ status: 'fulfilled', value: 'A' })
    expect(b).toEqual({ status: 'fulfilled', value: 'B' })
    expect(ghost).toMatchObject({ status: 'rejected', reason: { message: 'unknown machine ghost' } })
  })

  it('refuses the whole batch when the run throws, and runs the next one afresh', async () => {
    let fail = true
    const batch = new TickBatch<number, number>((items) => {
      if (fail) throw new Error('database is not open')
      return items
    })
    const outcomes = await Promise.allSettled([batch.add(1), batch.add(2)])
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected'])
    fail = false
    expect(await batch.add(3)).toBe(3)
  })

  it('refuses an item the run gave no answer for', async () => {
    const batch = new TickBatch<number, number>((items) => items.slice(1))
    const outcomes = await Promise.allSettled([batch.add(1), batch.add(2)])
    expect(outcomes[0]).toEqual({ status: 'fulfilled', value: 2 })
    expect(outcomes[1]).toMatchObject({
      status: 'rejected',
      reason: { message: 'the batch gave no answer for this item' },
    })
  })
})
