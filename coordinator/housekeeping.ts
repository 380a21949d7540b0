/**
 * The coordinator's periodic cleanup of what would otherwise only grow: admin
 * request nonces are remembered until their request could no longer be fresh
 * (REQUEST_WINDOW_MS after it was issued) and are then pruned. Runs once at
 * start (nonces left by an earlier run) and every `intervalMs` after.
 */
import { errorMessage } from '../lib/index.ts'
import type { FleetStore } from './store.ts'

/** How often expired nonces are pruned; a nonce outlives its expiry by at most this. */
export const HOUSEKEEPING_INTERVAL_MS = 10 * 60_000

export interface HousekeepingInit {
  store: Pick<FleetStore, 'pruneNonces'>
  intervalMs?: number
  log?: (msg: string) => void
  /** Called after every round (tests await it). */
  onRound?: () => void
}

export interface Housekeeping {
  /** One round now. */
  run(now?: number): Promise<void>
  /** Stops the timer and waits for a round in progress. */
  stop(): Promise<void>
}

export function startHousekeeping(init: HousekeepingInit): Housekeeping {
  let current: Promise<void> = Promise.resolve()
  const run = (now = Date.now()): Promise<void> => {
    current = current.then(async () => {
      try {
        await init.store.pruneNonces(now)
      } catch (err) {
        init.log?.(`housekeeping: pruning admin request nonces failed: ${errorMessage(err)}`)
      }
      init.onRound?.()
    })
    return current
  }
  void run()
  const timer = setInterval(() => void run(), init.intervalMs ?? HOUSEKEEPING_INTERVAL_MS)
  timer.unref()
  return {
    run,
    async stop() {
      clearInterval(timer)
      await current
    },
  }
}
