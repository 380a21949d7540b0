/**
 * End-to-end manifest verification on the agent. The agent trusts only the fleet
 * root key it pinned at enrollment: the coordinator merely carries manifests, so
 * the admission rules (protocol/manifest.ts, the same the coordinator applied on
 * submit) run again here against that root, this machine, the last sequence it
 * attempted and its own copy of the signed revocation list (agent/revocations.ts).
 *
 * @example
 *
 * ```ts
 * const { manifest, adminName } = verifyManifest(envelope, {
 *   fleetRoot, fleetId: 'acme', machine: 'edge-1', tags: ['lab'], lastSequence: 6,
 * })
 * ```
 */

import type { CertificateMemo, PublicKey } from '../keys/index.ts'
import {
  type AdmittedMachineTags,
  type AdmittedManifest,
  admitMachineTags,
  admitManifest,
  checkFleet,
  checkSigner,
  type Manifest,
  openManifest,
  type RevocationView,
} from '../protocol/index.ts'

// The updater catches refusals by this class; it is the protocol's one refusal error.

/** What the agent pinned at enrollment and knows about itself. */
export interface TrustContext {
  fleetRoot: PublicKey
  fleetId: string
  machine: string
  tags: readonly string[]
  /** The agent's signed revocation list: its serials are refused, and it must reach the head a manifest names. */
  revocations?: RevocationView
  /** Serials to refuse instead of the list's. */
  revokedSerials?: ReadonlySet<string>
  /** The certificate links this agent verified before: its admins' chains come with every manifest. */
  certificates?: CertificateMemo
}

export interface VerifyContext extends TrustContext {
  /** Highest manifest sequence this machine has attempted; only later ones are accepted. */
  lastSequence: number
  now?: number
}

export type VerifiedManifest = AdmittedManifest

export function verifyManifest(envelope: Uint8Array, ctx: VerifyContext): VerifiedManifest {
  return admitManifest(envelope, {
    fleetRoot: ctx.fleetRoot,
    fleetId: ctx.fleetId,
    machine: { name: ctx.machine, tags: ctx.tags },
    lastSequence: ctx.lastSequence,
    revocations: ctx.revocations,
    revokedSerials: ctx.revokedSerials,
    certificates: ctx.certificates,
    now: ctx.now,
  })
}

/**
 * A signed tag record (protocol/machine-tags.ts), checked with the rules the
 * coordinator ran on it, against this machine's own tags and the version of
 * the last record it took (0: its tags are still those it enrolled with).
 */
export function verifyMachineTags(
  envelope: Uint8Array,
  ctx: TrustContext & { tagsVersion: number; now?: number },
): AdmittedMachineTags {
  return admitMachineTags(envelope, {
    fleetRoot: ctx.fleetRoot,
    fleetId: ctx.fleetId,
    revocations: ctx.revocations,
    revokedSerials: ctx.revokedSerials,
    now: ctx.now,
    machine: { name: ctx.machine, tags: ctx.tags, version: ctx.tagsVersion },
  })
}

/**
 * A manifest this machine attempted before, read back from its own disk to
 * rebuild the replay high-water mark: it must open (signature, schema), be for
 * this fleet, and its signer must have been allowed to deploy here when it was
 * issued. Expiry and later revocations do not matter: it was attempted. A file
 * that fails (damaged, or not one the agent wrote) is undefined, so damage can
 * never raise the mark, and so never lock the machine out of updates.
 */
export function attemptedManifest(envelope: Uint8Array, trust: TrustContext): Manifest | undefined {
  try {
    const opened = openManifest(envelope)
    const manifest = opened.value
    const policy = {
      fleetRoot: trust.fleetRoot,
      fleetId: trust.fleetId,
      machine: { name: trust.machine, tags: trust.tags },
      now: manifest.issuedAt,
    }
    checkFleet(manifest, policy)
    checkSigner(opened, policy)
    return manifest
  } catch {
    return undefined
  }
}
