import { describe, expect, it } from 'vitest'
import { backoffDelay, RecoveryBackoff } from '../../lib/backoff.ts'

const init = { initialMs: 250, maxMs: 30_000, quickMaxMs: 1_000, quickForMs: 120_000 }

describe('RecoveryBackoff', () => {
  it('stays at most quickMaxMs apart for quickForMs after a success, then grows to maxMs', () => {
    const b = new RecoveryBackoff(init)
    b.succeeded(0)
    const quick = Array.from({ length: 30 }, (_, i) => b.next(i * 1_000))
    expect(Math.max(...quick)).toBeLessThanOrEqual(1_000)
    // two minutes on, the thirty failures so far count
    expect(b.next(121_000)).toBeGreaterThanOrEqual(15_000)
  })

  it('grows like backoffDelay when nothing ever worked', () => {
    const b = new RecoveryBackoff(init)
    for (let i = 1; i <= 8; i++) b.next(0)
    expect(b.next(0)).toBeGreaterThanOrEqual(backoffDelay(9, init) / 2)
    expect(b.attempt).toBe(9)
  })

  it('starts over at the first delay when the peer is seen again', () => {
    const b = new RecoveryBackoff(init)
    for (let i = 0; i < 10; i++) b.next(0)
    b.seen()
    expect(b.next(0)).toBeLessThanOrEqual(500)
  })
})
