import { describe, expect, it } from 'vitest'
import { parseShare, type WavePolicy } from '../../protocol/index.ts'
import { failureLimit, planWaves, resolveShare, rolloutOrder } from '../../protocol/waves.ts'

const policy = (waves: string[], extra: Partial<WavePolicy> = {}): WavePolicy => ({
  waves: waves.map((w) => parseShare(w) ?? { count: 0 }),
  maxFailures: { count: 0 },
  soakMs: 0,
  onFailure: 'halt',
  canaryTag: null,
  offlineTimeoutMs: 60_000,
  ...extra,
})
const fleet = (n: number, tagged: (i: number) => string[] = () => []) =>
  Array.from({ length: n }, (_, i) => ({ name: `m-${String(i).padStart(4, '0')}`, tags: tagged(i) }))

/** A tiny deterministic PRNG, so the property runs are reproducible. */
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

describe('wave planning', () => {
  it('cuts cumulative shares: a canary, then up to 10%, 50%, then the rest', () => {
    const waves = planWaves(fleet(100), policy(['1', '10%', '50%', '100%']))
    expect(waves.map((w) => w.length)).toEqual([1, 9, 40, 50])
  })

  it('is the same plan whatever the input order (stable by name hash), and reruns pick the same canary', () => {
    const machines = fleet(50)
    const a = planWaves(machines, policy(['1', '100%']))
    const b = planWaves([...machines].reverse(), policy(['1', '100%']))
    expect(a).toEqual(b)
    expect(a[0]).toEqual([rolloutOrder(machines, null)[0]])
    // Not simply the first name: the order is by hash.
    expect(rolloutOrder(machines, null)).not.toEqual(machines.map((m) => m.name))
  })

  it('puts every canary-tagged machine in the first wave', () => {
    const machines = fleet(20, (i) => (i === 7 || i === 13 ? ['canary'] : []))
    const waves = planWaves(machines, policy(['1', '100%'], { canaryTag: 'canary' }))
    expect(waves[0]?.sort()).toEqual(['m-0007', 'm-0013'])
    expect(waves[1]).toHaveLength(18)
  })

  it('gives machines no share reaches to the last wave and drops empty waves', () => {
    expect(planWaves(fleet(3), policy(['1', '1', '50%'])).map((w) => w.length)).toEqual([1, 2])
    expect(planWaves(fleet(0), policy(['1', '100%']))).toEqual([])
  })

  it('property: every machine is in exactly one wave, waves are non-empty and in rollout order', () => {
    const rand = prng(42)
    for (let run = 0; run < 300; run++) {
      const n = Math.floor(rand() * 60)
      const shares = Array.from({ length: 1 + Math.floor(rand() * 5) }, () =>
        rand() < 0.5 ? String(Math.floor(rand() * 10)) : `${1 + Math.floor(rand() * 100)}%`,
      )
      const machines = fleet(n, () => (rand() < 0.1 ? ['c'] : []))
      const p = policy(shares, { canaryTag: rand() < 0.5 ? 'c' : null })
      const waves = planWaves(machines, p)
      expect(waves.flat()).toEqual(rolloutOrder(machines, p.canaryTag))
      for (const w of waves) expect(w.length).toBeGreaterThan(0)
      if (p.canaryTag !== null)
        for (const m of machines.filter((x) => x.tags.includes('c'))) expect(waves[0]).toContain(m.name)
    }
  })

  it('parses shares and limits failures', () => {
    expect(parseShare('10%')).toEqual({ percent: 10 })
    expect(parseShare('3')).toEqual({ count: 3 })
    expect(parseShare('0%')).toBeUndefined()
    expect(parseShare('101%')).toBeUndefined()
    expect(parseShare('x')).toBeUndefined()
    expect(resolveShare({ percent: 10 }, 15)).toBe(2)
    expect(failureLimit(policy(['100%'], { maxFailures: { percent: 20 } }), 10)).toBe(2)
    expect(failureLimit(policy(['100%']), 10)).toBe(0)
  })
})
