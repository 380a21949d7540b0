/**
 * Signed tag records: how an admin changes the tags of an enrolled machine.
 * Tags decide which manifests reach a machine and which scoped admins cover it,
 * and the agent checks manifests against its own tags. So the coordinator must
 * not be able to change them by itself (it could move a prod device into a lab
 * admin's scope): a change is a record the admin signs, and the coordinator and
 * the agent run the same rules on it (admitMachineTags) before either acts on it.
 *
 * The rules, one refusal code each: the envelope opens; the record is for this
 * fleet and (agent) this machine; the signer's chain from the fleet root holds
 * and no link is revoked; it grants "enroll" (tags are what an enrollment token
 * grants, so changing them is the enroller's right, not a deployer's); the
 * signer could have enrolled the machine with its old tags and with its new ones
 * (every tag it had and every tag it gets is in scope, or a lab admin could pull
 * a prod machine into lab or push a lab one into prod); and the version is above
 * the last one accepted for the machine, so an older record cannot be replayed.
 *
 * @example
 *
 * ```ts
 * const envelope = sealMachineTags({ v: 1, fleetId: 'acme', machine: 'edge-1', tags: ['eu'], version: 1,
 *   issuedAt: Date.now() }, adminKey, adminChain)
 * const { record } = admitMachineTags(envelope, { fleetRoot, fleetId: 'acme',
 *   machine: { name: 'edge-1', tags: ['lab'], version: 0 } })
 * ```
 */
import { z } from 'zod'
import {
  type Authority,
  authorityCovers,
  CertificateError,
  DOMAINS,
  machineName,
  type PrivateKey,
  type PublicKey,
  type SignedCertificate,
  tagName,
  timestampMs,
  verifyChain,
} from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'
import { EnvelopeError, type Opened, openEnvelope, sealEnvelope } from './envelope.ts'
import { MAX_ENVELOPE_BYTES } from './messages.ts'
import type { RevocationView } from './revocation.ts'

/** At most as many tags as an enrollment token carries. */
export const MAX_MACHINE_TAGS = 64
/** Records one `set-tags` request carries. */
export const MAX_TAG_RECORDS = 1000

export const machineTagsSchema = z
  .strictObject({
    v: z.literal(1),
    fleetId: z.string().min(1).max(256),
    machine: machineName,
    /** The machine's whole tag set after the change, sorted, no repeats. */
    tags: z.array(tagName).max(MAX_MACHINE_TAGS),
    /** Per machine, above every version accepted before; its enrollment is version 0. */
    version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    issuedAt: timestampMs,
  })
  .refine((r) => r.tags.every((t, i) => i === 0 || (r.tags[i - 1] as string) < t), {
    message: 'tags must be sorted and must not repeat',
    path: ['tags'],
  })
export type MachineTags = z.infer<typeof machineTagsSchema>

/** `set-tags` answers with each machine's old and new tags. */
export const setTagsResult = z.strictObject({
  changed: z
    .array(
      z.strictObject({
        machine: machineName,
        from: z.array(tagName),
        to: z.array(tagName),
        version: z.number().int().min(1),
      }),
    )
    .max(MAX_TAG_RECORDS),
})
export type SetTagsResult = z.infer<typeof setTagsResult>

/** `tag-versions` answers with the last accepted version of each covered machine asked about (0: its enrollment). */
export const tagVersionsResult = z.record(machineName, z.number().int().min(0))
export type TagVersions = z.infer<typeof tagVersionsResult>

/** The record's tags in their one canonical order. */
export function normaliseTags(tags: readonly string[]): string[] {
  return [...new Set(tags)].sort()
}

/** Signs a tag record with an admin key; `chain` is that key's certificate chain from the fleet root. */
export function sealMachineTags(
  record: MachineTags,
  signer: PrivateKey,
  chain: readonly SignedCertificate[],
): Uint8Array {
  return sealEnvelope(machineTagsSchema, DOMAINS.machineTags, record, signer, chain)
}

export type MachineTagsRefusalCode =
  /** Not a tag record envelope: malformed, another domain, bad signature, invalid record. */
  | 'bad-envelope'
  | 'wrong-fleet'
  /** (Agent) the record names another machine. */
  | 'wrong-machine'
  /** The chain does not lead to the fleet root, or a link is expired or not yet valid. */
  | 'bad-chain'
  /** A certificate in the signer's chain is revoked. */
  | 'revoked'
  /** A link of the chain does not grant "enroll". */
  | 'capability-missing'
  /** The signer's scope does not cover every tag the machine has now (or its name, when it has none). */
  | 'old-tags-out-of-scope'
  /** The signer's scope does not cover every tag the record gives it (or its name, when it gives none). */
  | 'new-tags-out-of-scope'
  /** The version is not above the last one accepted for this machine: an older record replayed, or a race. */
  | 'stale-version'

export class MachineTagsRefusedError extends CodedError<MachineTagsRefusalCode> {
  override name = 'MachineTagsRefusedError'
  /** The decoded record when the envelope could be opened, for saying which one was refused. */
  readonly record: MachineTags | null
  constructor(
    code: MachineTagsRefusalCode,
    message: string,
    record: MachineTags | null = null,
    options?: ErrorOptions,
  ) {
    super(code, message, options)
    this.record = record
  }
}

/** What the receiver trusts, and the machine as it knows it before the change. */
export interface TagsPolicy {
  fleetRoot: PublicKey
  fleetId: string
  /** Serials to refuse; default: those of `revocations`. */
  revokedSerials?: ReadonlySet<string>
  revocations?: RevocationView
  now?: number
  /** The machine's tags now, and the last record version accepted for it (0: none since enrollment). */
  machine: { name: string; tags: readonly string[]; version: number }
}

export interface AdmittedMachineTags {
  record: MachineTags
  envelope: Uint8Array
  signer: PublicKey
  /** Name in the signer's leaf certificate, for logs and the audit log. */
  adminName: string
  added: string[]
  removed: string[]
}

const list = (tags: readonly string[]) => `[${tags.join(', ')}]`
const label = (r: MachineTags) => `tag record for ${r.machine} (version ${r.version}, tags ${list(r.tags)})`

/** Opens and validates the envelope (domain, signature, schema, size): rule "bad-envelope". */
export function openMachineTags(envelope: Uint8Array): Opened<MachineTags> {
  try {
    return openEnvelope(machineTagsSchema, DOMAINS.machineTags, envelope, MAX_ENVELOPE_BYTES)
  } catch (err) {
    const detail = err instanceof EnvelopeError ? `${err.code}: ${err.message}` : (err as Error).message
    throw new MachineTagsRefusedError('bad-envelope', `tag record cannot be opened (${detail})`, null, {
      cause: err,
    })
  }
}

function checkChain(
  r: MachineTags,
  chain: readonly SignedCertificate[],
  signer: PublicKey,
  policy: TagsPolicy,
): Authority {
  try {
    // No target: both scope rules below need the authority, and each has its own code.
    return verifyChain(chain, {
      root: policy.fleetRoot,
      signer,
      capability: 'enroll',
      now: policy.now ?? Date.now(),
      revokedSerials: policy.revokedSerials ?? policy.revocations?.revoked,
    })
  } catch (err) {
    if (!(err instanceof CertificateError)) throw err
    const code =
      err.code === 'revoked'
        ? 'revoked'
        : err.code === 'capability-missing'
          ? 'capability-missing'
          : 'bad-chain'
    const why =
      code === 'capability-missing'
        ? 'tags are granted by enrollment, so changing them needs the "enroll" capability'
        : 'it is not a valid certificate chain of this fleet'
    throw new MachineTagsRefusedError(code, `${label(r)} is signed by ${signer}: ${why}: ${err.message}`, r, {
      cause: err,
    })
  }
}

/**
 * Every rule, in order: envelope, fleet, machine, chain (revoked, capability),
 * old tags in scope, new tags in scope, version. Throws MachineTagsRefusedError
 * naming the first rule broken. `opened`: the envelope already opened by the
 * caller (to learn which machine it is for), so its signature is checked once.
 */
export function admitMachineTags(
  envelope: Uint8Array,
  policy: TagsPolicy,
  opened: Opened<MachineTags> = openMachineTags(envelope),
): AdmittedMachineTags {
  const r = opened.value
  const { machine } = policy
  if (r.fleetId !== policy.fleetId)
    throw new MachineTagsRefusedError(
      'wrong-fleet',
      `${label(r)} is for fleet "${r.fleetId}", not fleet "${policy.fleetId}"`,
      r,
    )
  if (r.machine !== machine.name)
    throw new MachineTagsRefusedError('wrong-machine', `${label(r)} is not for machine "${machine.name}"`, r)
  const authority = checkChain(r, opened.chain, opened.signer, policy)
  const who = `certificate ${authority.leaf.serial} ("${authority.leaf.name}")`
  // "new-machine": every tag in scope, and the machine covered by them or by name (keys/certificate.ts).
  if (!authorityCovers(authority, { kind: 'new-machine', name: machine.name, tags: machine.tags }))
    throw new MachineTagsRefusedError(
      'old-tags-out-of-scope',
      `${label(r)}: ${who} does not cover ${machine.name} with its current tags ${list(machine.tags)}; ` +
        'an admin may change the tags only of machines it could have enrolled as they are',
      r,
    )
  if (!authorityCovers(authority, { kind: 'new-machine', name: machine.name, tags: r.tags }))
    throw new MachineTagsRefusedError(
      'new-tags-out-of-scope',
      `${label(r)}: ${who} may not give ${machine.name} the tags ${list(r.tags)}; every new tag must be in its scope`,
      r,
    )
  if (r.version <= machine.version)
    throw new MachineTagsRefusedError(
      'stale-version',
      `${label(r)}: version ${machine.version} was already accepted for ${machine.name}; ` +
        'an older or repeated record is refused so it cannot be replayed. Run plan and apply again',
      r,
    )
  return {
    record: r,
    envelope,
    signer: opened.signer,
    adminName: authority.leaf.name,
    added: r.tags.filter((t) => !machine.tags.includes(t)),
    removed: machine.tags.filter((t) => !r.tags.includes(t)),
  }
}
