/**
 * The fleet's signed revocation list: a hash chain of entries, each revoking one
 * certificate serial, each signed by an admin whose certificate chain grants
 * `admin` on the whole fleet. Entry `seq` names the hash of entry `seq - 1` in
 * `prev` (all zeros for the first), so a list is one history: nobody holding a
 * list can be handed a shorter one as if it were complete, or another one at a
 * position it holds, without noticing. Admins sign entries; the coordinator only
 * stores and carries them, as it does manifests, so it cannot forge or alter one.
 *
 * Every receiver runs the same check on the next entry: the right fleet, the
 * next seq, `prev` equal to the held head, `at` not before the previous entry,
 * and a signer whose chain reaches the fleet root and grants `admin` fleet-wide
 * at `at`, none of whose certificates an earlier entry revoked. The chain is
 * checked at the entry's own time, not now, so an entry stays valid after its
 * signer's certificate expires; `at` may not go back, so a key whose certificate
 * expired cannot sign entries dated into its old validity before later ones.
 *
 * @example
 *
 * ```ts
 * const list = new RevocationChain({ fleetRoot, fleetId: 'acme' })
 * const envelope = sealRevocation(
 *   { v: 1, fleetId: 'acme', seq: 1, prev: ZERO_HASH, serial, reason: 'laptop lost', at: Date.now() },
 *   adminKey, adminChain)
 * list.accept([envelope]) // { added: 1 }
 * admitManifest(manifestEnvelope, { fleetRoot, fleetId: 'acme', revocations: list })
 * ```
 */
import { z } from 'zod'
import {
  CertificateError,
  DOMAINS,
  type PrivateKey,
  type PublicKey,
  type SignedCertificate,
  timestampMs,
  verifyChain,
} from '../keys/index.ts'
import { batches, CodedError, sha256Hex as hashBytes } from '../lib/index.ts'
import { EnvelopeError, openEnvelope, sealEnvelope } from './envelope.ts'
import {
  idHex,
  MAX_REVOCATION_BYTES,
  MAX_REVOCATIONS,
  MAX_REVOCATIONS_PER_FRAME,
  type RevocationHead,
  revocationBytes,
  revocationHeadSchema,
  sha256Hex,
} from './messages.ts'

/** `prev` of the first entry, and the hash of the empty list's head. */
export const ZERO_HASH = '0'.repeat(64)
export const EMPTY_HEAD: RevocationHead = { seq: 0, hash: ZERO_HASH }
/** How many bytes of entries one frame or admin answer carries (a larger single entry goes alone). */
export const REVOCATION_BATCH_BYTES = 128 * 1024

export const revocationEntrySchema = z
  .strictObject({
    v: z.literal(1),
    fleetId: z.string().min(1).max(256),
    seq: z.number().int().min(1).max(MAX_REVOCATIONS),
    prev: sha256Hex,
    serial: idHex,
    reason: z.string().max(256),
    at: timestampMs,
  })
  .refine((e) => (e.seq === 1) === (e.prev === ZERO_HASH), {
    message: 'the first entry, and only it, has an all-zero prev',
    path: ['prev'],
  })
export type RevocationEntry = z.infer<typeof revocationEntrySchema>

/** What the admin RPC answers `revocations` with. */
export const revocationsResult = z.strictObject({
  head: revocationHeadSchema,
  entries: z.array(revocationBytes).max(MAX_REVOCATIONS_PER_FRAME),
})
export type RevocationsPage = z.infer<typeof revocationsResult>

/** What the admin RPC answers a `revoke` carrying a signed entry with. */
export const revokeSignedResult = z.strictObject({ revoked: idHex, head: revocationHeadSchema })

export type RevocationErrorCode =
  /** Not a revocation envelope, or an invalid or oversized entry. */
  | 'bad-entry'
  | 'wrong-fleet'
  /** The signer may not revoke: chain, `admin` capability, fleet-wide scope, or revoked earlier. */
  | 'unauthorised'
  /** The entry does not extend the head it was checked against (seq or prev). */
  | 'not-next'
  /** Its `at` lies before the previous entry's. */
  | 'backdated'
  /** A different entry at a position already held. */
  | 'fork'

export class RevocationError extends CodedError<RevocationErrorCode> {
  override name = 'RevocationError'
}

export interface OpenedRevocation {
  entry: RevocationEntry
  /** The signed envelope, exactly as received: what is stored and forwarded. */
  envelope: Uint8Array
  /** SHA-256 of the signed entry bytes: what the next entry's `prev` and a manifest's head name. */
  hash: string
  signer: PublicKey
  chain: SignedCertificate[]
}

export function sealRevocation(
  entry: RevocationEntry,
  signer: PrivateKey,
  chain: readonly SignedCertificate[],
): Uint8Array {
  return sealEnvelope(revocationEntrySchema, DOMAINS.revocations, entry, signer, chain)
}

/** Opens an entry's envelope (domain, signature, schema, size); says nothing yet about its signer's authority. */
export function openRevocation(envelope: Uint8Array): OpenedRevocation {
  try {
    const opened = openEnvelope(revocationEntrySchema, DOMAINS.revocations, envelope, MAX_REVOCATION_BYTES)
    return { ...opened, entry: opened.value, envelope, hash: hashBytes(opened.payload) }
  } catch (err) {
    const detail = err instanceof EnvelopeError ? `${err.code}: ${err.message}` : (err as Error).message
    throw new RevocationError('bad-entry', `a revocation entry cannot be opened (${detail})`, { cause: err })
  }
}

/** What an entry is checked against: the fleet, and the list up to the entry before it. */
export interface RevocationPolicy {
  fleetRoot: PublicKey
  fleetId: string
}

export interface ListState {
  head: RevocationHead
  /** `at` of the head entry (0 for the empty list). */
  lastAt: number
  /** Serials revoked by the entries up to the head. */
  revoked: ReadonlySet<string>
}

/** The one rule set for the next entry (see the top of this file); throws RevocationError. */
export function checkNextRevocation(
  opened: OpenedRevocation,
  policy: RevocationPolicy,
  state: ListState,
): void {
  const { entry } = opened
  const what = `revocation entry ${entry.seq} (serial ${entry.serial})`
  if (entry.fleetId !== policy.fleetId)
    throw new RevocationError(
      'wrong-fleet',
      `${what} is for fleet "${entry.fleetId}", not "${policy.fleetId}"`,
    )
  if (entry.seq !== state.head.seq + 1 || entry.prev !== state.head.hash)
    throw new RevocationError(
      'not-next',
      `${what} follows entry ${entry.seq - 1} with hash ${entry.prev.slice(0, 12)}…, but the list ends at ` +
        `entry ${state.head.seq} with hash ${state.head.hash.slice(0, 12)}…`,
    )
  if (entry.at < state.lastAt)
    throw new RevocationError(
      'backdated',
      `${what} is dated ${new Date(entry.at).toISOString()}, before the entry it follows (${new Date(state.lastAt).toISOString()})`,
    )
  try {
    verifyChain(opened.chain, {
      root: policy.fleetRoot,
      signer: opened.signer,
      capability: 'admin',
      target: { kind: 'fleet' },
      now: entry.at,
      revokedSerials: state.revoked,
    })
  } catch (err) {
    if (!(err instanceof CertificateError)) throw err
    throw new RevocationError(
      'unauthorised',
      `${what} is signed by ${opened.signer}, who may not revoke: ${err.message}`,
      {
        cause: err,
      },
    )
  }
}

/** What the manifest admission rules need of a list (protocol/manifest.ts). */
export interface RevocationView {
  readonly head: RevocationHead
  /** The hash of entry `seq`, if held (seq 0: ZERO_HASH). */
  hashAt(seq: number): string | undefined
  readonly revoked: ReadonlySet<string>
}

/** How another party's head relates to a list's. */
export type HeadRelation =
  | 'same'
  /** Theirs is a shorter prefix of ours: they lost entries (a restore from backup) or withhold them. */
  | 'behind'
  /** Theirs is longer: their entries after ours are still to come. */
  | 'ahead'
  /** At their head's position ours holds another entry. */
  | 'fork'

/** A verified list in memory: every entry was checked against the ones before it. */
export class RevocationChain implements RevocationView {
  readonly policy: RevocationPolicy
  readonly #entries: OpenedRevocation[] = []
  readonly #revoked = new Set<string>()

  constructor(policy: RevocationPolicy) {
    this.policy = policy
  }

  get head(): RevocationHead {
    const last = this.#entries.at(-1)
    return last === undefined ? EMPTY_HEAD : { seq: last.entry.seq, hash: last.hash }
  }

  get revoked(): ReadonlySet<string> {
    return this.#revoked
  }

  /** `at` of the newest entry (0 for the empty list): the next entry may not be dated earlier. */
  get lastAt(): number {
    return this.#entries.at(-1)?.entry.at ?? 0
  }

  get length(): number {
    return this.#entries.length
  }

  hashAt(seq: number): string | undefined {
    return seq === 0 ? ZERO_HASH : this.#entries[seq - 1]?.hash
  }

  /** The entry revoking `serial`, if the list holds one. */
  find(serial: string): OpenedRevocation | undefined {
    return this.#entries.find((e) => e.entry.serial === serial)
  }

  /** Entries after `seq`, oldest first. */
  after(seq: number): OpenedRevocation[] {
    return this.#entries.slice(seq)
  }

  relation(theirs: RevocationHead): HeadRelation {
    const ours = this.head
    if (theirs.seq > ours.seq) return 'ahead'
    if (this.hashAt(theirs.seq) !== theirs.hash) return 'fork'
    return theirs.seq === ours.seq ? 'same' : 'behind'
  }

  /** Checks `envelope` as the next entry and appends it. */
  append(envelope: Uint8Array): OpenedRevocation {
    return this.#append(openRevocation(envelope))
  }

  #append(opened: OpenedRevocation): OpenedRevocation {
    checkNextRevocation(opened, this.policy, { head: this.head, lastAt: this.lastAt, revoked: this.#revoked })
    this.#entries.push(opened)
    this.#revoked.add(opened.entry.serial)
    return opened
  }

  /**
   * Takes consecutive entries from someone else's copy of the list: those it
   * holds already must be the same ones (else 'fork', and nothing after is
   * taken), the rest must extend it one by one. Entries taken before a bad one
   * stay taken; the error comes with how many were.
   */
  accept(envelopes: readonly Uint8Array[]): { added: number; error?: RevocationError } {
    let added = 0
    for (const envelope of envelopes) {
      try {
        const opened = openRevocation(envelope)
        const { seq, prev } = opened.entry
        const head = this.head
        if (seq <= head.seq) {
          const held = this.#entries[seq - 1] as OpenedRevocation
          if (held.hash !== opened.hash)
            throw new RevocationError(
              'fork',
              `offered another entry ${seq} than the one held (hash ${held.hash.slice(0, 12)}…, revoking ${held.entry.serial}); ` +
                'the held list is kept',
            )
          continue
        }
        if (seq === head.seq + 1 && prev !== head.hash)
          throw new RevocationError(
            'fork',
            `offered an entry ${seq} that follows another entry ${head.seq} than the one held; the held list is kept`,
          )
        this.#append(opened)
        added++
      } catch (err) {
        if (!(err instanceof RevocationError)) throw err
        return { added, error: err }
      }
    }
    return { added }
  }

  /** A list rebuilt from its entries, each checked again; throws at the first bad one. */
  static from(policy: RevocationPolicy, envelopes: readonly Uint8Array[]): RevocationChain {
    const chain = new RevocationChain(policy)
    for (const envelope of envelopes) chain.append(envelope)
    return chain
  }
}

/**
 * Splits entries into runs for frames: at most MAX_REVOCATIONS_PER_FRAME entries
 * and REVOCATION_BATCH_BYTES bytes each (a larger single entry goes alone).
 */
export function revocationBatches(envelopes: readonly Uint8Array[]): Uint8Array[][] {
  return batches(envelopes, { items: MAX_REVOCATIONS_PER_FRAME, bytes: REVOCATION_BATCH_BYTES })
}
