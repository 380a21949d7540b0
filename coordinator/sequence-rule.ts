/**
 * Where a new manifest's sequence may land, for every path that stores
 * manifests (a single submit, a rollout with its rollback manifests).
 */
import { StoreConflictError } from './store.ts'

/**
 * How far above the highest stored sequence a manifest may be numbered. Any
 * admin with `deploy` on one tag could otherwise submit 2^53-1: no manifest
 * could ever be numbered above it again, and the machines that attempted it
 * would refuse every later one as a replay. Honest deploys number max + 1
 * (a rollout with rollback manifests, a few more).
 */
export const MAX_SEQUENCE_STEP = 1_000

/** Throws 'stale-sequence' at or below `max`, 'sequence-jump' beyond max + MAX_SEQUENCE_STEP. */
export function checkNextSequence(sequence: number, max: number): void {
  if (sequence <= max)
    throw new StoreConflictError(
      'stale-sequence',
      `manifest sequence ${sequence} is not above the highest stored sequence ${max}; ` +
        `sign it again with sequence ${max + 1} or higher`,
    )
  if (sequence > max + MAX_SEQUENCE_STEP)
    throw new StoreConflictError(
      'sequence-jump',
      `manifest sequence ${sequence} is more than ${MAX_SEQUENCE_STEP} above the highest stored sequence ${max}; ` +
        `sign it again with sequence ${max + 1} (fleetmesh deploy numbers it so by itself)`,
    )
}
