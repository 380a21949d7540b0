/**
 * Sending a fleet file's apply: the tag records and every channel's rollout,
 * signed with consecutive sequences above the coordinator's highest, in one
 * request that the coordinator stores all or none (coordinator/admin-apply.ts).
 * Signed again, with the same ids, when another admin took a sequence first.
 */
import { UsageError } from '../../lib/index.ts'
import { type ApplyResult, MAX_ENVELOPE_BYTES, type WavePolicy } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError } from '../client.ts'
import {
  CoordinatorLostError,
  type ManifestFields,
  manifestSigner,
  randomId,
  withNextSequence,
} from './rollout.ts'
import { type SignedWaves, wavesSigner } from './rollout-waves.ts'
import { linkLost, linkReason } from './watch.ts'

/** One channel's rollout: its manifest, and its policy when it goes out in waves. */
export interface ApplyRollout {
  channel: string
  fields: ManifestFields
  waves: WavePolicy | undefined
}

/** Room the request's own fields, signature and certificate chain take besides the envelopes. */
const REQUEST_SLACK_BYTES = 16 * 1024

type Signer = (first: number) => SignedWaves & { waves: { policy: WavePolicy } | null }

/** Signs and sends the apply; answers with what the coordinator stored, rollouts in the order given. */
export async function submitApply(
  client: AdminClient,
  records: Uint8Array[],
  rollouts: readonly ApplyRollout[],
  progress: (msg: string) => void,
): Promise<ApplyResult> {
  const signers: Signer[] = []
  for (const r of rollouts) {
    const rolloutId = randomId()
    const { waves } = r
    if (waves === undefined) {
      const sign = await manifestSigner(client, r.fields, rolloutId)
      signers.push((first) => ({ envelope: sign(first), rollbacks: [], sequences: 1, waves: null }))
    } else {
      const sign = await wavesSigner(client, rolloutId, r.fields, waves, progress)
      signers.push((first) => ({ ...sign(first), waves: { policy: waves } }))
    }
  }
  try {
    return await withNextSequence(client, (maxSequence) => {
      let next = maxSequence + 1
      const signed = signers.map((sign) => {
        const s = sign(next)
        next += s.sequences
        return s
      })
      checkSize(records, signed)
      return client.applyFleet(
        records,
        signed.map((s) => ({
          envelope: s.envelope,
          waves: s.waves === null ? null : { policy: s.waves.policy, rollbacks: s.rollbacks },
        })),
      )
    })
  } catch (err) {
    if (err instanceof CoordinatorLostError || err instanceof UsageError) throw err
    if (linkLost(err))
      throw new CoordinatorLostError(
        'unconfirmed',
        `lost the coordinator while sending the apply (${linkReason(err)}): it stores it all or none. ` +
          'Run plan to see whether it was stored, then apply again',
        { cause: err },
      )
    if (err instanceof AdminRequestError)
      throw new AdminRequestError(
        err.code,
        `the coordinator refused the apply, so nothing was changed: ${err.message}`,
        { cause: err },
      )
    throw err
  }
}

/** One request carries the whole apply: refused here, before it is sent, when it cannot. */
function checkSize(records: readonly Uint8Array[], signed: readonly SignedWaves[]): void {
  const bytes = [...records, ...signed.flatMap((s) => [s.envelope, ...s.rollbacks])].reduce(
    (n, b) => n + b.byteLength,
    0,
  )
  const room = MAX_ENVELOPE_BYTES - REQUEST_SLACK_BYTES
  if (bytes > room)
    throw new UsageError(
      `apply refused, nothing was changed: its signed tag records and manifests take ${Math.ceil(bytes / 1024)} KiB, ` +
        `and one apply, which the coordinator stores all or none, carries at most ${room / 1024} KiB. ` +
        'Apply the fleet file in parts: fewer channels or machines at a time',
    )
}
