/**
 * Deploying in waves: signing the release (for all targets) and, with
 * --on-failure rollback, one rollback manifest per previous desired manifest of
 * the targets, submitting them together (`submit-waves`), and following the
 * rollout wave by wave until it is done, halted or aborted.
 *
 * The coordinator cannot sign, so a rollback needs the admin's signature now:
 * each rollback manifest carries the previous manifest's payload (a closure map
 * narrowed to those machines), generation and activation, targets the machines
 * that had it as desired state, and a
 * sequence above the release's, so agents that took the release accept it
 * after it. The coordinator holds them unused unless the rollout halts.
 */
import { output } from '../../lib/index.ts'
import {
  buildManifest,
  type Manifest,
  narrowClosureMap,
  openManifest,
  type SubmitResult,
  sealManifest,
  targetsMachine,
  type WavePolicy,
} from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import type { DeploySettings } from './deploy-options.ts'
import { describePolicy } from './deploy-wave-options.ts'
import {
  beforeSubmit,
  followRollout,
  type ManifestFields,
  randomId,
  submitRollout,
  withNextSequence,
} from './rollout.ts'
import { followWaves } from './rollout-follow.ts'

/** Submits the manifests of one rollout, at once or (with settings.waves) in waves, and follows it. */
export async function rollOut(
  client: AdminClient,
  rolloutId: string,
  manifests: readonly ManifestFields[],
  settings: DeploySettings,
): Promise<number> {
  const [release] = manifests
  if (settings.waves === undefined || release === undefined)
    return followRollout(client, await submitRollout(client, rolloutId, manifests), settings)
  // a rollout in waves is one release manifest (a closure map is one too): never drop the waves silently
  if (manifests.length !== 1)
    throw new TypeError(`a rollout in waves takes one manifest, got ${manifests.length}`)
  const policy = settings.waves
  const signer = await wavesSigner(client, rolloutId, release, policy, settings.progress)
  const result = await withNextSequence(client, (maxSequence) => {
    const { envelope, rollbacks } = signer(maxSequence + 1)
    return client.submitWaves(envelope, policy, rollbacks)
  })
  return followSubmittedWaves(client, result, policy, settings)
}

/** Says what the coordinator made of a rollout in waves, then follows it (or, with --no-watch, prints it). */
export async function followSubmittedWaves(
  client: AdminClient,
  result: SubmitResult,
  policy: WavePolicy,
  settings: DeploySettings,
): Promise<number> {
  const { rolloutId } = result
  settings.progress(
    `rollout ${rolloutId} in waves (${describePolicy(policy)}): manifest seq ${result.sequence} ` +
      `for ${result.machines.length} machine(s)`,
  )
  if (!settings.watch) {
    output(settings.json, result, () => `submitted rollout ${rolloutId} in waves`)
    return 0
  }
  return followWaves(client, rolloutId, settings.timeoutMs, settings.json, settings.progress)
}

/** A rollout in waves signed from a first sequence: the release, then its rollbacks above it. */
export interface SignedWaves {
  envelope: Uint8Array
  rollbacks: Uint8Array[]
  /** How many sequences it takes, from the first */
  sequences: number
}

/**
 * Reads what signing a rollout in waves needs (with --on-failure rollback, the
 * targets' previous manifests; the revocation head), then signs it from any first
 * sequence, with the same ids each time, so a retry after another admin took the
 * sequence submits the same rollout.
 */
export async function wavesSigner(
  client: AdminClient,
  rolloutId: string,
  fields: ManifestFields,
  policy: WavePolicy,
  progress: (msg: string) => void,
): Promise<(first: number) => SignedWaves> {
  const previous = await beforeSubmit(async () =>
    policy.onFailure === 'rollback' ? previousManifests(client, fields, progress) : [],
  )
  const { list } = await beforeSubmit(() => client.revocationList())
  const fixed = { now: Date.now(), revocations: list.head, fleetId: client.home.fleet.fleetId }
  const releaseId = randomId()
  const rollbackRollout = randomId()
  const rollbackIds = previous.map(() => randomId())
  const seal = (m: Manifest) => sealManifest(m, client.home.key, client.home.chain)
  return (first) => {
    const release = buildManifest({ ...fields, ...fixed, id: releaseId, rolloutId, sequence: first })
    const rollbacks = previous.map(({ manifest: m, machines }, i) =>
      buildManifest({
        ...fixed,
        id: rollbackIds[i],
        rolloutId: rollbackRollout,
        sequence: first + 1 + i,
        generation: m.generation,
        targets: { machines, tags: [] },
        // a closure map must name exactly its targets (manifest admission, rule "closure-map-mismatch")
        payload: m.payload.kind === 'nix' ? narrowClosureMap(m.payload, machines) : m.payload,
        activation: m.activation,
        healthCheck: m.healthCheck,
        confirmTimeoutMs: m.confirmTimeoutMs,
        ...(fields.validForMs !== undefined ? { validForMs: fields.validForMs } : {}),
      }),
    )
    return { envelope: seal(release), rollbacks: rollbacks.map(seal), sequences: 1 + rollbacks.length }
  }
}

/** The targets' current desired manifests, each with the target machines that have it. */
async function previousManifests(
  client: AdminClient,
  fields: ManifestFields,
  progress: (msg: string) => void,
): Promise<{ manifest: Manifest; machines: string[] }[]> {
  const targets = (await client.machines()).filter((m) => targetsMachine(fields.targets, m.name, m.tags))
  const desired = await client.desiredManifests(targets.map((m) => m.name))
  const byId = new Map<string, { manifest: Manifest; machines: string[] }>()
  for (const { machine, envelope } of desired) {
    const manifest = openManifest(envelope).value
    const entry = byId.get(manifest.id) ?? { manifest, machines: [] }
    entry.machines.push(machine)
    byId.set(manifest.id, entry)
  }
  const have = new Set(desired.map((d) => d.machine))
  const without = targets.filter((m) => !have.has(m.name)).map((m) => m.name)
  if (without.length > 0)
    progress(`no previous generation to roll back to (left as they are on a halt): ${without.join(', ')}`)
  return [...byId.values()]
}
