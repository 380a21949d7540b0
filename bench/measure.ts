/** Tiny measuring helpers shared by the benchmarks: time-boxed rate loops, percentiles, a process's CPU. */
import { readFile } from 'node:fs/promises'

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

/**
 * CPU time (user + system) a process has used, in seconds: all its threads, or with
 * `mainThread` only its main one. From /proc (stat(5): utime and stime, the 14th and
 * 15th fields, in clock ticks of 1/100 s).
 */
export async function cpuSeconds(pid: number, mainThread = false): Promise<number> {
  const stat = await readFile(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8')
  // the fields after the parenthesised command name
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
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
