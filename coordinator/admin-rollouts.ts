/**
 * The admin ops of rollouts in waves: `submit-waves` (a signed release plus its
 * held rollback manifests, planned into waves here and moved on by
 * rollout-engine.ts), `rollout-list` / `rollout-show` (reads), `rollout-control`
 * (pause, resume, abort) and `desired-manifests` (what the deploy CLI signs
 * rollback manifests from). A rollout is visible to, and controlled by, only an
 * admin whose certificate covers every machine of it.
 */
import type { Authority } from '../keys/index.ts'
import {
  type AdminOp,
  planWaves,
  type RolloutView,
  type SubmitResult,
  type WavePolicy,
} from '../protocol/index.ts'
import { AdminDenied } from './admin-context.ts'
import { coverage } from './machine-scope.ts'
import { RolloutControlError, type RolloutEngine } from './rollout-engine.ts'
import {
  type FleetStore,
  type MachineRecord,
  type ManifestRecord,
  type NewRollout,
  type RolloutRecord,
  StoreConflictError,
} from './store.ts'

export type RolloutOp = Extract<
  AdminOp,
  { op: 'submit-waves' | 'rollout-list' | 'rollout-show' | 'rollout-control' | 'desired-manifests' }
>

export interface RolloutOpsInit {
  store: FleetStore
  rollouts: RolloutEngine
}

/** Checks a signed manifest as submit-manifest does, resolving its targets; stores nothing. */
export type Admit = (envelope: Uint8Array) => Promise<ManifestRecord>

export async function runRolloutOp(
  init: RolloutOpsInit,
  authority: Authority,
  actor: string,
  body: RolloutOp,
  admit: Admit,
): Promise<{ result: unknown; detail: string }> {
  const { store, rollouts } = init
  switch (body.op) {
    case 'submit-waves': {
      const result = await submitWaves(init, body, admit)
      return {
        result,
        detail: `rollout ${result.rolloutId} in waves, manifest ${result.manifestId} seq ${result.sequence} → ${result.machines.join(', ')}`,
      }
    }
    case 'rollout-list': {
      const covers = await coverage(store, authority)
      const visible = (await store.rollouts.list(body.limit)).filter((r) => r.plan.flat().every(covers))
      const result: RolloutView[] = []
      for (const r of visible) result.push(await rollouts.view(r))
      return { result, detail: `${result.length} rollout(s)` }
    }
    case 'rollout-show':
      return {
        result: await rollouts.view(await covered(store, authority, body.rolloutId)),
        detail: body.rolloutId,
      }
    case 'rollout-control': {
      await covered(store, authority, body.rolloutId)
      try {
        const next = await rollouts.control(body.rolloutId, body.action, actor)
        return { result: await rollouts.view(next), detail: `${body.action} rollout ${body.rolloutId}` }
      } catch (err) {
        if (err instanceof RolloutControlError) throw new AdminDenied(err.code, err.message)
        throw err
      }
    }
    case 'desired-manifests': {
      const covers = await coverage(store, authority)
      const desired = await store.getDesiredMany([...new Set(body.machines)].filter(covers))
      const result = [...desired].map(([machine, { envelope }]) => ({ machine, envelope }))
      return { result, detail: `${result.length} of ${body.machines.length} machine(s)` }
    }
  }
}

async function submitWaves(
  { store, rollouts }: RolloutOpsInit,
  body: Extract<RolloutOp, { op: 'submit-waves' }>,
  admit: Admit,
): Promise<SubmitResult> {
  const all = await store.listMachines()
  const rollout = await planRollout(all, body, admit, Date.now())
  try {
    await rollouts.create(rollout)
  } catch (err) {
    if (err instanceof StoreConflictError) throw new AdminDenied(err.code, err.message)
    throw err
  }
  return wavesResult(rollout, all)
}

/**
 * A release in waves and its held rollbacks, admitted and planned into waves over
 * `machines` (the fleet as it will be when stored); stores nothing.
 */
export async function planRollout(
  machines: readonly MachineRecord[],
  body: { envelope: Uint8Array; policy: WavePolicy; rollbacks: readonly Uint8Array[] },
  admit: Admit,
  at: number,
): Promise<NewRollout> {
  const release = await admit(body.envelope)
  const held: ManifestRecord[] = []
  for (const envelope of body.rollbacks) held.push(await admit(envelope))
  for (const r of held) {
    // Agents must take a rollback after the release, and it must not pass for part of the release.
    if (r.sequence <= release.sequence || r.rolloutId === release.rolloutId)
      throw new AdminDenied(
        'bad-rollback',
        `rollback manifest ${r.id} must have a sequence above the release's (${release.sequence}) and its own rollout id`,
      )
  }
  const targeted = new Set(release.machines)
  const members = machines.filter((m) => targeted.has(m.name))
  const plan = planWaves(members, body.policy)
  const inPlan = new Set(plan.flat())
  return {
    release,
    rollbacks: held.map((manifest) => ({
      manifest,
      machines: manifest.machines.filter((m) => inPlan.has(m)),
    })),
    policy: body.policy,
    plan,
    at,
  }
}

/** What submit-waves (and apply, per rollout in waves) answers. */
export function wavesResult({ release, plan }: NewRollout, machines: readonly MachineRecord[]): SubmitResult {
  const names = new Set(machines.map((m) => m.name))
  return {
    manifestId: release.id,
    rolloutId: release.rolloutId,
    sequence: release.sequence,
    machines: plan.flat(),
    unknown: release.targets.machines.filter((n) => !names.has(n)),
  }
}

/**
 * The rollout in waves, if it exists and the caller covers every machine of it
 * (what every rollout op and a rollout watch's wave view require); else undefined.
 */
export async function visibleRollout(
  store: FleetStore,
  authority: Authority,
  id: string,
): Promise<RolloutRecord | undefined> {
  const r = await store.rollouts.get(id)
  if (r === undefined) return undefined
  return r.plan.flat().every(await coverage(store, authority)) ? r : undefined
}

/** The rollout, if it exists and the caller covers every machine of it; else refused as unknown. */
async function covered(store: FleetStore, authority: Authority, id: string): Promise<RolloutRecord> {
  const r = await visibleRollout(store, authority, id)
  if (r === undefined)
    throw new AdminDenied(
      'unknown-rollout',
      `no rollout in waves ${id}, or your certificate does not cover all its machines; see "fleetmesh rollout list"`,
    )
  return r
}
