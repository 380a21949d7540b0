/**
 * `apply` on the admin protocol: a fleet file carried out as one operation. Each
 * tag record and manifest in it meets the rules it would meet sent alone
 * (set-tags, submit-manifest, submit-waves), the manifests against the fleet as
 * it will be once the tag records are stored. Then the store takes everything in
 * one transaction (store-bundle.ts) or nothing, so an apply refused or cut short
 * halfway changes no machine. Agents hear of it only after the commit: the tag
 * records first, then the desired manifests, and rollouts in waves start.
 */
import type { PublicKey } from '../keys/index.ts'
import type { AdminOp, ApplyResult, SubmitResult } from '../protocol/index.ts'
import { AdminDenied } from './admin-context.ts'
import { planRollout, wavesResult } from './admin-rollouts.ts'
import { admitTagRecords, type TagsInit } from './admin-tags.ts'
import type { ControlService } from './control.ts'
import type { FleetEvents } from './events.ts'
import type { RolloutEngine } from './rollout-engine.ts'
import { type MachineRecord, type ManifestRecord, type RolloutRecord, StoreConflictError } from './store.ts'
import type { BundleStep } from './store-bundle.ts'

export interface ApplyInit extends TagsInit {
  events: FleetEvents
  control: Pick<ControlService, 'pushTags' | 'pushDesired'>
  rollouts: Pick<RolloutEngine, 'started'>
}

/** Checks a signed manifest as submit-manifest does, resolving its targets among `machines`; stores nothing. */
export type AdmitAmong = (envelope: Uint8Array, machines: readonly MachineRecord[]) => Promise<ManifestRecord>

export interface ApplyOutcome {
  result: ApplyResult
  /** For the audit log */
  detail: string
  /** Tells the agents, once the answer is sent and audited. */
  announce: () => Promise<void>
}

/** What submit-manifest answers for a manifest it stored (and apply, per manifest). */
export function submitResultOf(record: ManifestRecord): SubmitResult {
  const { id: manifestId, rolloutId, sequence, machines } = record
  const unknown = record.targets.machines.filter((n) => !machines.includes(n))
  return { manifestId, rolloutId, sequence, machines, unknown }
}

export async function runApplyOp(
  init: ApplyInit,
  caller: { signer: PublicKey },
  body: Extract<AdminOp, { op: 'apply' }>,
  admit: AdmitAmong,
  now = Date.now(),
): Promise<ApplyOutcome> {
  if (body.records.length === 0 && body.rollouts.length === 0)
    throw new AdminDenied('bad-request', 'nothing to apply: the request has no tag records and no rollouts')
  const tags = await admitTagRecords(init, caller, body.records, now)
  const retagged = new Map(tags.changes.map((c) => [c.machine, [...c.tags]]))
  const machines = (await init.store.listMachines()).map((m) => ({
    ...m,
    tags: retagged.get(m.name) ?? m.tags,
  }))
  const steps: BundleStep[] = []
  const results: SubmitResult[] = []
  for (const r of body.rollouts) {
    if (r.waves === null) {
      const manifest = await admit(r.envelope, machines)
      steps.push({ manifest, machines: manifest.machines })
      results.push(submitResultOf(manifest))
    } else {
      const waves = { envelope: r.envelope, ...r.waves }
      const rollout = await planRollout(machines, waves, (e) => admit(e, machines), now)
      steps.push({ rollout })
      results.push(wavesResult(rollout, machines))
    }
  }
  let stored: (ManifestRecord | RolloutRecord)[]
  try {
    stored = await init.store.applyBundle(tags.changes, steps)
  } catch (err) {
    if (err instanceof StoreConflictError) throw new AdminDenied(err.code, err.message)
    throw err
  }
  const detail = [
    ...(tags.changes.length > 0 ? [`tags ${tags.detail}`] : []),
    ...results.map(
      (r, i) =>
        `rollout ${r.rolloutId}${'rollout' in (steps[i] as BundleStep) ? ' in waves' : ''}, manifest ${r.manifestId} ` +
        `seq ${r.sequence} → ${r.machines.join(', ')}`,
    ),
  ].join('; ')
  const announce = async () => {
    for (const m of tags.machines) await init.control.pushTags(m)
    for (const record of stored) {
      if ('plan' in record) await init.rollouts.started(record)
      else {
        init.events.emit({ type: 'manifest', manifest: record })
        await init.control.pushDesired(record.machines)
      }
    }
  }
  return { result: { tags: tags.changed, rollouts: results }, detail, announce }
}
