/**
 * A fleet file's apply as the store takes it (coordinator/admin-apply.ts): all or
 * none, in one transaction, so an apply refused or cut short halfway changes nothing.
 */
import type { TagChange } from './sqlite-tags.ts'
import type { ManifestRecord, NewManifest, NewRollout, RolloutRecord } from './store.ts'

/** One rollout of an apply: a manifest to its machines at once, or a rollout in waves. */
export type BundleStep = { manifest: NewManifest; machines: readonly string[] } | { rollout: NewRollout }
/** What each step stored: the manifest, or the rollout in waves. */
export type BundleOutcome = ManifestRecord | RolloutRecord

export interface BundleStore {
  /**
   * All or none: the tag changes (as machineTags.apply), then each step in order
   * (as addManifest or rollouts.create), each checked against what the steps before
   * it stored, so their sequences must rise in order.
   */
  applyBundle(tags: readonly TagChange[], steps: readonly BundleStep[]): Promise<BundleOutcome[]>
}
