/**
 * End-to-end manifest verification on the agent. The agent trusts only the fleet
 * root key it pinned at enrollment: the coordinator merely carries manifests, so
 * the admission rules (protocol/manifest.ts, the same the coordinator applied on
 * submit) run again here against that root, this machine and the last sequence it
 * attempted.
 *
 * @example
 *
 * ```ts
 * const { manifest, adminName } = verifyManifest(envelope, {
 *   fleetRoot, fleetId: 'acme', machine: 'edge-1', tags: ['lab'], lastSequence: 6,
 * })
 * ```
 */

import type { PublicKey } from '../keys/index.ts'
import { type AdmittedManifest, admitManifest } from '../protocol/index.ts'

// The updater catches refusals by this class; it is the protocol's one refusal error.

/** What the agent pinned at enrollment and knows about itself. */
export interface TrustContext {
  fleetRoot: PublicKey
  fleetId: string
  machine: string
  tags: readonly string[]
  revokedSerials?: ReadonlySet<string>
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
    revokedSerials: ctx.revokedSerials,
    now: ctx.now,
  })
}
