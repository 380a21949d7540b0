/** Tiny measuring helpers shared by the benchmarks: time-boxed rate loops and percentiles. */

export interface Rate {
  ops: number
  seconds: number
  perSecond: number
}

/** Runs fn in batches until at least `seconds` have passed; returns the rate. */
export function measureRate(fn: () => void, seconds = 1, batch = 16): Rate {
  for (let i = 0; i < batch; i++) fn() // warm-up: JIT and key caches
  const start = process.hrtime.bigint()
  const limit = BigInt(Math.round(seconds * 1e9))
  let ops = 0
  let elapsed = 0n
  while (elapsed < limit) {
    for (let i = 0; i < batch; i++) fn()
    ops += batch
    elapsed = process.hrtime.bigint() - start
  }
  const s = Number(elapsed) / 1e9
  return { ops, seconds: s, perSecond: ops / s }
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[idx] as number
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

export function line(label: string, value: string): void {
  console.log(`  ${label.padEnd(58)} ${value}`)
}
