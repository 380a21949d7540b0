/**
 * Following a rollout in waves (deploy --waves, watch --rollout, rollout show
 * --watch): a line per change of where it stands, and the exit code it ends with.
 *
 * It renders the `rollout` events the coordinator pushes on the watch stream of
 * the rollout (coordinator/admin-watch.ts) as the engine moves it on, so
 * nothing is polled. The coordinator sends the first one before the watch's
 * snapshot; a snapshot with none before it means this is no rollout in waves
 * the admin may see.
 */
import { output } from '../../lib/index.ts'
import type { RolloutView, WatchEvent } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError, type AdminWatch } from '../client.ts'
import { EXIT } from '../rollout-outcome.ts'

/**
 * The longest single wait for the next event. Node's timers overflow above
 * 2^31-1 ms (about 24.8 days) and throw ERR_OUT_OF_RANGE, so a longer --timeout
 * (or none) is waited out in slices of at most this.
 */
export const MAX_WAIT_MS = 2 ** 31 - 1

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

/** A watch stream already opened, and the events read from it so far (they are handed out first). */
export interface OpenedWatch {
  watch: AdminWatch
  events: WatchEvent[]
}

/** The stream of `opened` that hands out its already-read events first. */
export function replayed(opened: OpenedWatch): AdminWatch {
  const events = [...opened.events]
  return {
    next: (timeoutMs) => {
      const e = events.shift()
      return e === undefined ? opened.watch.next(timeoutMs) : Promise.resolve(e)
    },
    close: () => opened.watch.close(),
  }
}

/**
 * Reads a rollout watch up to its snapshot, or to the rollout view the
 * coordinator sends before it for a rollout in waves the admin may see:
 * `waves` tells which. A stream that stays silent for `timeoutMs` counts as a
 * plain rollout: the caller's own follow then times out as it does.
 */
export async function peekWaves(
  client: Pick<AdminClient, 'watch'>,
  rolloutId: string,
  timeoutMs: number,
): Promise<OpenedWatch & { waves: boolean }> {
  const watch = await client.watch(rolloutId)
  const events: WatchEvent[] = []
  const deadline = Date.now() + timeoutMs
  try {
    while (true) {
      const e = await watch.next(Math.max(1, Math.min(deadline - Date.now(), MAX_WAIT_MS)))
      events.push(e)
      if (e.type === 'rollout' || e.type === 'snapshot') return { watch, events, waves: e.type === 'rollout' }
    }
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') return { watch, events, waves: false }
    watch.close()
    throw err
  }
}

/**
 * Follows a rollout in waves, a line per change, until it ends or `timeoutMs`
 * (null: no limit) passes, which is said and exits EXIT.timedOut. `opened` is a
 * stream of the rollout the caller already opened (see peekWaves).
 */
export async function followWaves(
  client: Pick<AdminClient, 'watch'>,
  rolloutId: string,
  timeoutMs: number | null,
  json: boolean,
  progress: (msg: string) => void,
  opened?: OpenedWatch,
): Promise<number> {
  const deadline = timeoutMs === null ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs
  const watch = opened === undefined ? await client.watch(rolloutId) : replayed(opened)
  let last: RolloutView | undefined
  let lastLine = ''
  try {
    while (true) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) return timedOut(rolloutId, timeoutMs ?? 0, last, json)
      let event: WatchEvent
      try {
        event = await watch.next(Math.min(remaining, MAX_WAIT_MS))
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') continue
        throw err
      }
      if (event.type === 'snapshot' && last === undefined)
        throw new AdminRequestError(
          'unknown-rollout',
          `no rollout in waves ${rolloutId}, or your certificate does not cover all its machines; see "fleetmesh rollout list"`,
        )
      if (event.type !== 'rollout') continue
      last = event.rollout
      const line = waveLine(last)
      const code = wavesExitCode(last)
      // The last line is the output itself: a terminal showing both would show it twice.
      if (line !== lastLine && (code === null || json)) progress(line)
      lastLine = line
      if (code !== null) {
        output(json, last, () => line)
        return code
      }
    }
  } finally {
    watch.close()
  }
}

/** Says the watch gave up, where the rollout stood then, and that it goes on. */
function timedOut(
  rolloutId: string,
  timeoutMs: number,
  last: RolloutView | undefined,
  json: boolean,
): number {
  const after = timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)} s`
  const message =
    `gave up watching rollout ${rolloutId} after ${after} (--timeout); ` +
    `it goes on on the coordinator (fleetmesh rollout show ${rolloutId} --watch follows it again)`
  if (json) {
    process.stderr.write(`${message}\n`)
    output(true, last ?? { type: 'timeout', rolloutId }, () => '')
  } else process.stdout.write(`${last === undefined ? '' : `${waveLine(last)}\n`}${message}\n`)
  return EXIT.timedOut
}
