/**
 * Following a rollout in waves (deploy --waves, watch --rollout, rollout show
 * --watch): a line per change of where it stands, and the exit code it ends with.
 */
import { output, sleep } from '../../lib/index.ts'
import type { RolloutView } from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { EXIT } from '../rollout-outcome.ts'

/** How often a follower asks where the rollout stands. */
const FOLLOW_INTERVAL_MS = 1000

/** "wave 2 of 4: 3 done, 0 failed, 2 pending, 0 skipped, 10 waiting; soak 40s left". */
export function waveLine(v: RolloutView, now = Date.now()): string {
  const c = v.counts
  let soak = ''
  if (v.state === 'running' && v.soakStartedAt !== null)
    soak = `; soak ${Math.max(0, Math.ceil((v.soakStartedAt + v.policy.soakMs - now) / 1000))}s left`
  return (
    `rollout ${v.rolloutId} ${v.state}: wave ${Math.min(v.wave + 1, v.waves)} of ${v.waves}: ` +
    `${c.done} done, ${c.failed} failed, ${c.pending} pending, ${c.skipped} skipped, ${c.waiting} waiting` +
    (c.withheld > 0 ? `, ${c.withheld} withheld` : '') +
    soak +
    (v.reason !== null && v.state !== 'running' ? ` (${v.reason})` : '')
  )
}

/** The exit code of a finished rollout in waves (null while it goes on). */
export function wavesExitCode(v: RolloutView): number | null {
  if (v.state === 'halted' || v.state === 'aborted') return EXIT.halted
  if (v.state === 'done') return v.counts.failed > 0 ? EXIT.notCommitted : EXIT.committed
  return null
}

/** Follows a rollout in waves, a line per change, until it ends or `timeoutMs` passes. */
export async function followWaves(
  client: AdminClient,
  rolloutId: string,
  timeoutMs: number,
  json: boolean,
  progress: (msg: string) => void,
): Promise<number> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (true) {
    const view = await client.rolloutShow(rolloutId)
    const line = waveLine(view)
    if (line !== last) progress(line)
    last = line
    const code = wavesExitCode(view)
    if (code !== null || Date.now() >= deadline) {
      output(json, view, () => line)
      return code ?? EXIT.timedOut
    }
    await sleep(FOLLOW_INTERVAL_MS)
  }
}
