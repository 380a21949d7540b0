/**
 * The coordinator's gate for live update output (coordinator/update-log-gate.ts):
 * a frame is passed on only after the reports before it are stored, only about
 * the machine's current update (as its newest stored report names it), and
 * only within the machine's rate; nothing is stored. A fake store and clock.
 */
import { describe, expect, it } from 'vitest'
import type { FleetEvent } from '../../coordinator/events.ts'
import type { StatusRecord } from '../../coordinator/store.ts'
import { UpdateLogGate } from '../../coordinator/update-log-gate.ts'
import type { UpdateLogFrame } from '../../protocol/index.ts'

const X = 'a'.repeat(32)
const Y = 'b'.repeat(32)
const frame = (manifestId: string, offset: number, text: string): UpdateLogFrame => ({
  t: 'update-log',
  manifestId,
  offset,
  text,
})

function gate(rate = { burstBytes: 1000, bytesPerSecond: 100, frameBytes: 100 }) {
  const current = new Map<string, string>([['edge-1', X]])
  const emitted: FleetEvent[] = []
  const clock = { now: 0 }
  const store = {
    latestStatus: async (machine: string) => {
      const id = current.get(machine)
      return id === undefined ? undefined : ({ report: { manifestId: id } } as unknown as StatusRecord)
    },
  }
  const g = new UpdateLogGate(
    () => ({ store, events: { emit: (e) => emitted.push(e) } }),
    rate,
    () => clock.now,
  )
  return { g, current, emitted, clock }
}

describe('UpdateLogGate', () => {
  it('passes a frame of the current update on once the reports before it are stored', async () => {
    const { g, emitted } = gate()
    let stored!: () => void
    const reports = new Promise<void>((resolve) => {
      stored = resolve
    })
    const passed = g.take('edge-1', frame(X, 0, 'line\n'), reports)
    await Promise.resolve()
    expect(emitted).toEqual([])
    stored()
    await passed
    expect(emitted).toEqual([
      { type: 'update-log', machine: 'edge-1', manifestId: X, offset: 0, text: 'line\n' },
    ])
  })

  it("drops a frame about another update than the machine's current one, and follows a new one", async () => {
    const { g, current, emitted } = gate()
    await g.take('edge-1', frame(Y, 0, 'not yet\n'), Promise.resolve())
    expect(emitted).toEqual([])
    expect(g.dropped.stale).toBe(1)
    current.set('edge-1', Y)
    await g.take('edge-1', frame(Y, 8, 'now\n'), Promise.resolve())
    expect(emitted.map((e) => e.type === 'update-log' && e.text)).toEqual(['now\n'])
  })

  it('caps each machine at its rate: a burst, then what refills', async () => {
    const { g, current, emitted, clock } = gate()
    current.set('edge-2', X)
    for (let i = 0; i < 15; i++) await g.take('edge-1', frame(X, i, 'x'), Promise.resolve())
    expect(emitted).toHaveLength(10) // 1000 bytes of burst, 100 a frame at least
    expect(g.dropped.rate).toBe(5)
    await g.take('edge-2', frame(X, 0, 'x'), Promise.resolve()) // another machine has its own
    expect(emitted).toHaveLength(11)
    clock.now += 1000 // 100 bytes refilled: one more frame
    await g.take('edge-1', frame(X, 15, 'x'), Promise.resolve())
    await g.take('edge-1', frame(X, 16, 'x'), Promise.resolve())
    expect(emitted).toHaveLength(12)
    expect(g.dropped.rate).toBe(6)
  })
})
