/**
 * Rollouts in waves as the store keeps them (coordinator/store.ts, whose
 * FleetStore holds a RolloutStore): the records rollout-engine.ts moves on, and
 * the one-transaction changes it makes.
 */
import type { RolloutState, WavePolicy } from '../protocol/index.ts'
import type { NewManifest } from './store.ts'

/** A rollout in waves, as stored (sqlite-rollouts.ts); rollout-engine.ts moves it on. */
export interface RolloutRecord {
  /** The rollout id of its release manifest. */
  id: string
  /** The release: signed for every machine of the plan, desired by each only once its wave starts. */
  manifestId: string
  policy: WavePolicy
  /** The machines of each wave, in order (waves.ts). */
  plan: string[][]
  /** Each machine's desired manifest before the rollout (null: none), to withhold the release again on a halt. */
  previous: Record<string, string | null>
  /** Held rollback manifests: each is sent, on a halt with rollback, to its machines that took the release. */
  rollbacks: { manifestId: string; machines: string[] }[]
  state: RolloutState
  reason: string | null
  /** Index of the wave started last. */
  wave: number
  waveStartedAt: number
  /** When the current wave settled healthy; the next starts after the policy's soak. */
  soakStartedAt: number | null
  rolledBack: boolean
  createdAt: number
  updatedAt: number
}

/** What a rollout transition changes. */
export type RolloutChange = Partial<
  Pick<RolloutRecord, 'state' | 'reason' | 'wave' | 'waveStartedAt' | 'soakStartedAt' | 'rolledBack'>
>

/** A machine's desired manifest to set with a transition; null removes its desired state. */
export interface DesiredChange {
  machine: string
  manifestId: string | null
}

export interface NewRollout {
  release: NewManifest
  /** Rollback manifests with the machines each is for. */
  rollbacks: { manifest: NewManifest; machines: string[] }[]
  policy: WavePolicy
  plan: string[][]
  at: number
}

/** Rollouts in waves, stored so that they survive a coordinator restart at any point. */
export interface RolloutStore {
  /**
   * In one transaction: the manifests' sequences must exceed every stored one
   * ('stale-sequence') and every machine be enrolled ('unknown-machine'); stores
   * the release (its machines: the whole plan) and the held rollbacks (desired by
   * no machine), records each machine's previous desired manifest, and makes the
   * release the desired state of the first wave.
   */
  create(input: NewRollout): Promise<RolloutRecord>
  get(id: string): Promise<RolloutRecord | undefined>
  /** Newest first. */
  list(limit: number): Promise<RolloutRecord[]>
  /** Rollouts running or paused, oldest first: what the engine resumes on start-up. */
  active(): Promise<RolloutRecord[]>
  /**
   * In one transaction, only if the rollout is still in `expect` (state and wave,
   * else undefined and nothing changes): applies the change and sets the desired states.
   */
  transition(
    id: string,
    expect: Pick<RolloutRecord, 'state' | 'wave'>,
    change: RolloutChange,
    desired: readonly DesiredChange[],
    at: number,
  ): Promise<RolloutRecord | undefined>
}
