/**
 * Rollout control overhead: with 1,000 simulated machines on a real on-disk
 * SQLite store and the real rollout engine, the time from the last report that
 * settles wave k to wave k+1's desired states being set and pushed (soak 0).
 * Reference: the 1 s budget for a wave hand-over at that fleet size.
 */
import { parseShare } from '../protocol/index.ts'
import { RolloutSim } from '../testkit/rollout-sim.ts'
import { fmt, line } from './measure.ts'

const BUDGET_MS = 1000

export async function benchRollout(machines: number): Promise<Record<string, number>> {
  const sim = await RolloutSim.open({ machines, onDisk: true })
  const out: Record<string, number> = {}
  try {
    const waves = ['1%', '10%', '50%', '100%'].map((w) => parseShare(w) ?? { count: 1 })
    const policy = {
      waves,
      maxFailures: { percent: 5 },
      soakMs: 0,
      onFailure: 'halt' as const,
      canaryTag: null,
      offlineTimeoutMs: 600_000,
    }
    const r = await sim.start(policy)
    console.log(`Rollout in ${r.plan.length} waves over ${machines} machines (on-disk SQLite, soak 0)`)
    let worst = 0
    for (let k = 0; k + 1 < r.plan.length; k++) {
      const wave = r.plan[k] ?? []
      await sim.report(r, wave.slice(0, -1), 'committed')
      await sim.engine.idle(r.id)
      const pushed = sim.nextPush()
      const started = performance.now()
      await sim.report(r, wave.slice(-1), 'committed')
      await pushed
      const ms = (sim.pushes.at(-1)?.at ?? started) - started
      worst = Math.max(worst, ms)
      line(
        `wave ${k + 1} (${wave.length}) → wave ${k + 2} (${r.plan[k + 1]?.length}) pushed`,
        `${fmt(ms, 1)} ms`,
      )
      out[`wave ${k + 1}→${k + 2} ms`] = ms
    }
    line('worst hand-over ÷ 1 s budget (reference)', `${fmt((worst / BUDGET_MS) * 100, 1)} %`)
    out['worst hand-over ms'] = worst
    return out
  } finally {
    await sim.close()
  }
}
