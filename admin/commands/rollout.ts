/**
 * What every kind of deploy shares once its payload is in place: signing a
 * manifest with the next sequence, submitting it, saying what the coordinator
 * made of it, and following the rollout until no machine is pending.
 *
 * Losing the coordinator is told apart by when it happens. Before the submit
 * (target checks, uploads, cache pushes) nothing was deployed, and the error
 * says so. During the submit only the coordinator, once back, knows whether it
 * stored the rollout: the watch reconnects and finds out. After the coordinator
 * accepted it the rollout is stored and goes on, and the watch reconnects and
 * follows it.
 */
import { randomBytes } from 'node:crypto'
import { CodedError, output } from '../../lib/index.ts'
import { buildManifest, type ManifestOptions, type SubmitResult, sealManifest } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError } from '../client.ts'
import type { DeploySettings } from './deploy-options.ts'
import { linkLost, linkReason, watchRollout } from './watch.ts'

export type ManifestFields = Omit<
  ManifestOptions,
  'fleetId' | 'sequence' | 'id' | 'rolloutId' | 'now' | 'revocations'
>

export const randomId = () => randomBytes(16).toString('hex')

export type CoordinatorLostCode =
  /** Lost before any manifest was submitted */
  | 'not-deployed'
  /** Lost after some manifests of a rollout were accepted, before the rest */
  | 'partly-deployed'
  /** Lost during the submit, with --no-watch: nobody checks whether it was stored */
  | 'unconfirmed'

export class CoordinatorLostError extends CodedError<CoordinatorLostCode> {
  override name = 'CoordinatorLostError'
}

function notDeployed(cause: unknown): CoordinatorLostError {
  // A failed dial's whole message names the coordinator and its addresses.
  const why = cause instanceof AdminRequestError ? cause.message : linkReason(cause)
  return new CoordinatorLostError(
    'not-deployed',
    `lost the coordinator before the rollout was submitted (${why}): nothing was deployed. ` +
      'Run the same deploy again once the coordinator is back (an upload resumes where it stopped).',
  )
}

/** Runs what comes before the submit; a coordinator lost there has deployed nothing, and the error says so. */
export async function beforeSubmit<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    throw linkLost(err) ? notDeployed(err) : err
  }
}

/** "<stem>-20261123T101500": a payload's name made safe for a generation, plus a UTC timestamp. */
export function generationName(stem: string): string {
  const safe = stem.replace(/[^A-Za-z0-9._+-]/g, '-').slice(0, 80)
  return `${safe}-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}`
}

/**
 * Signs the manifest with the next sequence and submits it. The sequence must exceed
 * every earlier manifest's; if another admin submits between our read and our submit,
 * the coordinator says so and we retry with the same ids. Manifests that share
 * `rolloutId` form one rollout (one per machine of a --nix-map). A coordinator
 * unreachable before the manifest went out is a CoordinatorLostError('not-deployed');
 * a link lost after it went out is thrown as it is: the manifest may be stored.
 * The manifest names the head of the revocation list, checked here from the fleet
 * root: agents act on it only once they hold the list that far.
 */
export async function submitNext(
  client: AdminClient,
  fields: ManifestFields,
  rolloutId: string = randomId(),
): Promise<SubmitResult> {
  const sign = await manifestSigner(client, fields, rolloutId)
  return withNextSequence(client, (maxSequence) => client.submitManifest(sign(maxSequence + 1)))
}

/**
 * Reads the revocation head a manifest names, then signs it with any sequence and
 * the same id each time (a retry after another admin took the sequence).
 */
export async function manifestSigner(
  client: AdminClient,
  fields: ManifestFields,
  rolloutId: string,
): Promise<(sequence: number) => Uint8Array> {
  const { list } = await beforeSubmit(() => client.revocationList())
  const fixed = { ...fields, now: Date.now(), id: randomId(), rolloutId, revocations: list.head }
  const { fleetId } = client.home.fleet
  return (sequence) =>
    sealManifest(buildManifest({ ...fixed, fleetId, sequence }), client.home.key, client.home.chain)
}

/**
 * Submits what `submit` signs above the coordinator's highest sequence, signing
 * again (at most 3 more times) when another admin took that sequence first. A
 * coordinator unreachable at the submit means nothing was deployed.
 */
export async function withNextSequence<T>(
  client: AdminClient,
  submit: (maxSequence: number) => Promise<T>,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const { maxSequence } = await beforeSubmit(() => client.fleetInfo())
    try {
      return await submit(maxSequence)
    } catch (err) {
      if (err instanceof AdminRequestError && err.code === 'unreachable') throw notDeployed(err)
      if (!(err instanceof AdminRequestError && err.code === 'stale-sequence' && attempt < 3)) throw err
    }
  }
}

/** The manifests of one rollout the coordinator accepted, and the error that lost it during the first submit. */
export interface Submitted {
  rolloutId: string
  results: SubmitResult[]
  lost?: unknown
}

/**
 * Submits the manifests of one rollout in turn. Losing the coordinator during
 * the first leaves `lost` set (whether it was stored, the watch finds out);
 * losing it after some were accepted is a CoordinatorLostError('partly-deployed')
 * that says which machines got the rollout.
 */
export async function submitRollout(
  client: AdminClient,
  rolloutId: string,
  manifests: readonly ManifestFields[],
): Promise<Submitted> {
  const results: SubmitResult[] = []
  for (const fields of manifests) {
    try {
      results.push(await submitNext(client, fields, rolloutId))
    } catch (err) {
      const lost = err instanceof CoordinatorLostError || linkLost(err)
      if (!lost || (results.length === 0 && err instanceof CoordinatorLostError)) throw err
      if (results.length === 0) return { rolloutId, results, lost: err }
      const got = results.flatMap((r) => r.machines)
      throw new CoordinatorLostError(
        'partly-deployed',
        `lost the coordinator during the submit of rollout ${rolloutId} (${linkReason(err)}): ` +
          `${got.join(', ') || 'no enrolled machine'} got it, and it goes on there ` +
          `(fleetmesh watch --rollout ${rolloutId} follows it); the other machines may not have it: ` +
          'deploy to them again once the coordinator is back',
      )
    }
  }
  return { rolloutId, results }
}

/**
 * Says what the coordinator made of the submitted manifests (all of one rollout),
 * then with --no-watch prints the result and returns 0, else watches until no
 * machine is pending and returns watchRollout's exit code.
 */
export async function followRollout(
  client: AdminClient,
  submitted: Submitted,
  settings: DeploySettings,
): Promise<number> {
  const { rolloutId, results, lost } = submitted
  if (lost !== undefined) {
    if (settings.watch)
      return watchRollout(client, rolloutId, [], settings.timeoutMs, settings.json, {
        standing: 'unconfirmed',
        lost,
      })
    throw new CoordinatorLostError(
      'unconfirmed',
      `lost the coordinator while rollout ${rolloutId} was being submitted (${linkReason(lost)}), so it may ` +
        `or may not be stored: "fleetmesh watch --rollout ${rolloutId}" tells (exit 4: it was not)`,
    )
  }
  const machines = [...new Set(results.flatMap((r) => r.machines))]
  for (const result of results) {
    settings.progress(
      `rollout ${result.rolloutId}: manifest seq ${result.sequence} for ${result.machines.length} machine(s): ${result.machines.join(', ') || '(none enrolled yet)'}`,
    )
    if (result.unknown.length > 0)
      settings.progress(`not enrolled (will get it once enrolled): ${result.unknown.join(', ')}`)
  }
  if (!settings.watch || machines.length === 0) {
    if (settings.watch)
      settings.progress(`no enrolled machine is part of rollout ${rolloutId}: nothing to watch`)
    output(settings.json, results.length === 1 ? results[0] : results, () => `submitted rollout ${rolloutId}`)
    return 0
  }
  return watchRollout(client, rolloutId, machines, settings.timeoutMs, settings.json, {
    standing: 'accepted',
  })
}
