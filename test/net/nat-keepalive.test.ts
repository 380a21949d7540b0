// The punch port's NAT keepalive learns the NAT's mapping lifetime: it stays
// while mappings outlive it, halves (to a floor) when one is lost, and never
// climbs back to an interval a mapping was already lost at.
import { describe, expect, it } from 'vitest'
import { KeepaliveTuner } from '../../net/holepunch/keepalive.ts'

describe('NAT keepalive interval', () => {
  it('starts at the maximum and keeps it while the mapping holds', () => {
    const k = new KeepaliveTuner(30_000)
    for (let i = 0; i < 5; i++) k.held()
    expect(k.status()).toEqual({ intervalMs: 30_000, maxMs: 30_000, minMs: 5_000, held: 5, lost: 0 })
  })

  it('halves inside the lifetime a lost mapping showed, down to the floor', () => {
    const k = new KeepaliveTuner(30_000)
    // a NAT with a 30 s TCP timeout loses the mapping idle for 30 s
    expect(k.lost(30_000)).toBe(15_000)
    k.held()
    expect(k.intervalMs).toBe(15_000)
    // a later loss after a shorter idle gap (the NAT got stricter) goes lower, not back up
    expect(k.lost(12_000)).toBe(6_000)
    expect(k.lost(40_000)).toBe(6_000)
    expect(k.lost(6_000)).toBe(5_000)
    expect(k.status()).toMatchObject({ intervalMs: 5_000, lostAfterMs: 6_000, lost: 4, held: 1 })
  })
})
