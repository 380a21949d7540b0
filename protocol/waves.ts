/**
 * Deterministic wave planning for rollouts in waves (the coordinator's rollout
 * engine, and `fleetmesh plan` predicting the waves): which
 * machines go in which wave, and how many failures a wave may have. Pure, so
 * the same fleet and policy give the same plan on every run: machines are
 * ordered by the SHA-256 of their name (stable across reruns and unrelated to
 * enrollment order), canary-tagged machines first, and the waves are cut at the
 * policy's cumulative shares.
 *
 * @example
 *
 * ```ts
 * planWaves([{ name: 'a', tags: [] }, …], policy) // [['c'], ['a', 'f'], […]]
 * ```
 */
import { sha256Hex } from '../lib/index.ts'
import type { Share, WavePolicy } from './wave-policy.ts'

export interface WaveCandidate {
  name: string
  tags: readonly string[]
}

/** How many of `total` machines a share is: counts are capped at the total, percentages rounded up. */
export function resolveShare(share: Share, total: number): number {
  if ('count' in share) return Math.min(share.count, total)
  return Math.min(total, Math.ceil((share.percent * total) / 100))
}

/** The machines in rollout order: canary-tagged first, each group by the hash of the name. */
export function rolloutOrder(machines: readonly WaveCandidate[], canaryTag: string | null): string[] {
  const keyed = machines.map((m) => ({
    name: m.name,
    canary: canaryTag !== null && m.tags.includes(canaryTag),
    key: sha256Hex(m.name),
  }))
  keyed.sort(
    (a, b) =>
      Number(b.canary) - Number(a.canary) ||
      (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) ||
      (a.name < b.name ? -1 : 1),
  )
  return keyed.map((k) => k.name)
}

/**
 * The waves: wave k holds the machines between the cumulative shares k-1 and k.
 * Every canary-tagged machine is in the first wave, even beyond its share; the
 * machines no share reaches join the last wave; empty waves are dropped.
 */
export function planWaves(machines: readonly WaveCandidate[], policy: WavePolicy): string[][] {
  const order = rolloutOrder(machines, policy.canaryTag)
  const canaries =
    policy.canaryTag === null ? 0 : machines.filter((m) => m.tags.includes(policy.canaryTag as string)).length
  const waves: string[][] = []
  let from = 0
  policy.waves.forEach((share, k) => {
    let upTo = Math.max(from, resolveShare(share, order.length))
    if (k === 0) upTo = Math.max(upTo, canaries)
    if (k === policy.waves.length - 1) upTo = order.length
    if (upTo > from) waves.push(order.slice(from, upTo))
    from = upTo
  })
  return waves
}

/** Failures allowed among `size` machines before the rollout halts (more than this halts it). */
export function failureLimit(policy: WavePolicy, size: number): number {
  return resolveShare(policy.maxFailures, size)
}
