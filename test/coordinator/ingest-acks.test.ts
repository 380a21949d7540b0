/**
 * Acknowledgements of status reports (control.ts, report-acks.ts): one ack per
 * commit batch and session, never before the reports it covers are durably
 * stored, and cumulative (the last one names the highest seq). And the
 * fleet-wide bound on reports in flight (report-budget.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ControlService } from '../../coordinator/control.ts'
import { FleetEvents } from '../../coordinator/events.ts'
import { ReportBudget } from '../../coordinator/report-budget.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { FleetStore } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { enroll, ScriptedStream, serve, statusFrame } from './ingest-stream.ts'

let store: FleetStore
let control: ControlService

beforeEach(async () => {
  store = await openSqliteStore(':memory:')
  control = new ControlService({ store, events: new FleetEvents(), idleTimeoutMs: 600_000, log: () => {} })
})
afterEach(async () => {
  await store.close()
})

describe('acknowledging status reports', () => {
  it('sends one cumulative ack per commit batch, each after the reports it covers are stored', async () => {
    const key = PrivateKey.generate()
    await enroll(store, 'edge-1', key)
    const count = 40
    const frames = Array.from({ length: count }, (_, i) => statusFrame('edge-1', i + 1, key))
    const fs = new ScriptedStream('edge-1', frames)
    // What is durably stored at the moment each ack goes out (the reports are new, seq 1..count).
    const storedAtAck: number[] = []
    fs.onSend = (frame) => {
      if (frame.t === 'ack') storedAtAck.push(control.ingest.reports)
      if (frame.t === 'ack' && frame.seq === count) fs.end()
    }
    await serve(control, fs, key)

    const acks = fs.acks()
    expect(acks.at(-1)).toBe(count)
    expect(acks).toEqual([...acks].sort((a, b) => a - b)) // increasing: each covers the ones before
    expect(acks.length).toBeLessThanOrEqual(control.ingest.commits)
    expect(acks.length).toBeLessThan(count)
    expect(storedAtAck.map((stored, i) => stored >= (acks[i] as number))).toEqual(acks.map(() => true))
    expect(await store.lastStatusSeq('edge-1')).toBe(count)
  })

  it('acknowledges reports sent again after the ack was lost, without storing them twice', async () => {
    const key = PrivateKey.generate()
    await enroll(store, 'edge-1', key)
    const first = new ScriptedStream('edge-1', [statusFrame('edge-1', 1, key), statusFrame('edge-1', 2, key)])
    first.onSend = (frame) => frame.t === 'ack' && frame.seq === 2 && first.end()
    await serve(control, first, key)
    const again = new ScriptedStream('edge-1', [statusFrame('edge-1', 2, key), statusFrame('edge-1', 3, key)])
    again.onSend = (frame) => frame.t === 'ack' && frame.seq === 3 && again.end()
    await serve(control, again, key)
    expect(again.acks().at(-1)).toBe(3)
    expect(control.ingest.reports).toBe(4) // 2 was written again as a duplicate, not a new report
    expect(await store.lastStatusSeq('edge-1')).toBe(3)
  })
})

describe('the fleet-wide bound on reports in flight', () => {
  it('lets sessions wait for a place once all are taken, first come first served', async () => {
    const budget = new ReportBudget(2)
    expect(budget.acquire()).toBeUndefined()
    expect(budget.acquire()).toBeUndefined()
    const order: string[] = []
    const a = budget.acquire()?.then(() => order.push('a'))
    const b = budget.acquire()?.then(() => order.push('b'))
    expect(a).toBeDefined()
    budget.release()
    await a
    expect(order).toEqual(['a'])
    budget.release()
    await b
    expect(order).toEqual(['a', 'b'])
    budget.release()
    expect(budget.free).toBe(1)
  })

  it('refuses a bound below one', () => {
    expect(() => new ReportBudget(0)).toThrow(RangeError)
  })
})
