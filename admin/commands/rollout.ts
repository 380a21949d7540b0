/**
 * What every kind of deploy shares once its payload is in place: signing a
 * manifest with the next sequence, submitting it, saying what the coordinator
 * made of it, and following the rollout until every machine settles.
 */
import { randomBytes } from 'node:crypto'
import { output } from '../../lib/index.ts'
import { buildManifest, type ManifestOptions, type SubmitResult, sealManifest } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError } from '../client.ts'
import type { DeploySettings } from './deploy-options.ts'
import { watchRollout } from './watch.ts'

export type ManifestFields = Omit<ManifestOptions, 'fleetId' | 'sequence' | 'id' | 'rolloutId' | 'now'>

export const randomId = () => randomBytes(16).toString('hex')

/** "<stem>-20261123T101500": a payload's name made safe for a generation, plus a UTC timestamp. */
export function generationName(stem: string): string {
  const safe = stem.replace(/[^A-Za-z0-9._+-]/g, '-').slice(0, 80)
  return `${safe}-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}`
}

/**
 * Signs the manifest with the next sequence and submits it. The sequence must exceed
 * every earlier manifest's; if another admin submits between our read and our submit,
 * the coordinator says so and we retry with the same ids. Manifests that share
 * `rolloutId` form one rollout (one per machine of a --nix-map).
 */
export async function submitNext(
  client: AdminClient,
  fields: ManifestFields,
  rolloutId: string = randomId(),
): Promise<SubmitResult> {
  const fixed = { ...fields, now: Date.now(), id: randomId(), rolloutId }
  for (let attempt = 0; ; attempt++) {
    const { maxSequence } = await client.fleetInfo()
    const manifest = buildManifest({
      ...fixed,
      fleetId: client.home.fleet.fleetId,
      sequence: maxSequence + 1,
    })
    try {
      return await client.submitManifest(sealManifest(manifest, client.home.key, client.home.chain))
    } catch (err) {
      if (!(err instanceof AdminRequestError && err.code === 'stale-sequence' && attempt < 3)) throw err
    }
  }
}

/**
 * Says what the coordinator made of the submitted manifests (all of one rollout),
 * then with --no-watch prints the result and returns 0, else watches until every
 * machine settles and returns watchRollout's exit code.
 */
export async function followRollout(
  client: AdminClient,
  results: readonly SubmitResult[],
  settings: DeploySettings,
): Promise<number> {
  const first = results[0]
  if (first === undefined) throw new Error('followRollout needs at least one submitted manifest')
  const machines = [...new Set(results.flatMap((r) => r.machines))]
  for (const result of results) {
    settings.progress(
      `rollout ${result.rolloutId}: manifest seq ${result.sequence} for ${result.machines.length} machine(s): ${result.machines.join(', ') || '(none enrolled yet)'}`,
    )
    if (result.unknown.length > 0)
      settings.progress(`not enrolled (will get it once enrolled): ${result.unknown.join(', ')}`)
  }
  if (!settings.watch) {
    output(
      settings.json,
      results.length === 1 ? first : results,
      () => `submitted rollout ${first.rolloutId}`,
    )
    return 0
  }
  return watchRollout(client, first.rolloutId, machines, settings.timeoutMs, settings.json)
}
