/**
 * Rollouts in waves on the wire: the policy an admin submits with a release
 * (coordinator/rollout-engine.ts moves it on) and the states a rollout goes
 * through. Shared by the deploy CLI, a fleet file and the coordinator.
 */
import { z } from 'zod'
import { tagName } from '../keys/index.ts'

/** A share of a rollout's machines: an absolute count, or a percentage of them (rounded up). */
export const shareSchema = z.union([
  z.strictObject({ count: z.number().int().nonnegative().max(100_000) }),
  z.strictObject({ percent: z.number().positive().max(100) }),
])
export type Share = z.infer<typeof shareSchema>

/** Parses "1" or "10%" as the CLI takes a share; undefined when it is neither. */
export function parseShare(text: string): Share | undefined {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(text.trim())
  if (m === null) return undefined
  const n = Number(m[1])
  if (m[2] === '%') return n > 0 && n <= 100 ? { percent: n } : undefined
  return Number.isInteger(n) && n <= 100_000 ? { count: n } : undefined
}

export function formatShare(share: Share): string {
  return 'count' in share ? String(share.count) : `${share.percent}%`
}

export const ON_FAILURE = ['halt', 'rollback'] as const
export const ROLLOUT_STATES = ['running', 'paused', 'halted', 'aborted', 'done'] as const
export type RolloutState = (typeof ROLLOUT_STATES)[number]

/**
 * How a rollout advances in waves (coordinator/rollout-engine.ts). The waves
 * are cumulative shares of the machines: [1, 10%, 100%] is a canary, then up to
 * a tenth, then the rest. It is not signed: the coordinator only chooses when
 * each machine gets the manifest the admin signed for all of them.
 */
export const wavePolicySchema = z.strictObject({
  waves: z.array(shareSchema).min(1).max(20),
  /** Failures beyond this, within a wave or over the whole rollout, halt it. */
  maxFailures: shareSchema,
  /** How long a settled wave must stay healthy before the next starts. */
  soakMs: z
    .number()
    .int()
    .nonnegative()
    .max(7 * 86_400_000),
  onFailure: z.enum(ON_FAILURE),
  /** Machines with this tag are placed in the first wave. */
  canaryTag: tagName.nullable(),
  /** A machine of a started wave offline this long counts as skipped, not pending. */
  offlineTimeoutMs: z
    .number()
    .int()
    .positive()
    .max(30 * 86_400_000),
})
export type WavePolicy = z.infer<typeof wavePolicySchema>

/** How many rollback manifests one rollout may carry (one per distinct previous desired manifest). */
export const MAX_ROLLBACK_MANIFESTS = 64
