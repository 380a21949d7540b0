/**
 * End-to-end manifest verification. The agent trusts only the fleet root key it
 * pinned at enrollment: the coordinator merely carries manifests, so everything
 * that makes a manifest acceptable (who signed it, for which fleet and machine,
 * when, and in which order) is checked here against that root.
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
import { CertificateError, DOMAINS, verifyChain } from '../keys/index.ts'
import { EnvelopeError, type Manifest, manifestSchema, openEnvelope } from '../protocol/index.ts'

export type RefusalCode =
  | 'bad-envelope'
  | 'unauthorised'
  | 'wrong-fleet'
  | 'not-targeted'
  | 'not-yet-valid'
  | 'expired'
  | 'replayed'

export class ManifestRefusedError extends Error {
  override name = 'ManifestRefusedError'
  readonly code: RefusalCode
  /** The decoded manifest when the envelope could be opened, for reporting which one was refused. */
  readonly manifest: Manifest | null
  constructor(code: RefusalCode, message: string, manifest: Manifest | null = null, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.manifest = manifest
  }
}

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

export interface VerifiedManifest {
  manifest: Manifest
  envelope: Uint8Array
  signer: PublicKey
  /** Name in the signer's leaf certificate, for logs and reports. */
  adminName: string
}

const iso = (ms: number) => new Date(ms).toISOString()

export function verifyManifest(envelope: Uint8Array, ctx: VerifyContext): VerifiedManifest {
  const now = ctx.now ?? Date.now()
  let opened: ReturnType<typeof openEnvelope<typeof manifestSchema>>
  try {
    opened = openEnvelope(manifestSchema, DOMAINS.manifest, envelope)
  } catch (err) {
    const detail = err instanceof EnvelopeError ? `${err.code}: ${err.message}` : (err as Error).message
    throw new ManifestRefusedError('bad-envelope', `manifest envelope cannot be opened (${detail})`, null, {
      cause: err,
    })
  }
  const manifest = opened.value
  const label = `manifest ${manifest.id} (sequence ${manifest.sequence}, generation "${manifest.generation}")`

  let adminName: string
  try {
    const authority = verifyChain(opened.chain, {
      root: ctx.fleetRoot,
      signer: opened.signer,
      capability: 'deploy',
      target: { kind: 'machine', name: ctx.machine, tags: ctx.tags },
      now,
      ...(ctx.revokedSerials !== undefined ? { revokedSerials: ctx.revokedSerials } : {}),
    })
    adminName = authority.leaf.name
  } catch (err) {
    if (!(err instanceof CertificateError)) throw err
    throw new ManifestRefusedError(
      'unauthorised',
      `${label} is signed by ${opened.signer}, who may not deploy to machine "${ctx.machine}" in this fleet: ${err.message}`,
      manifest,
      { cause: err },
    )
  }

  if (manifest.fleetId !== ctx.fleetId) {
    throw new ManifestRefusedError(
      'wrong-fleet',
      `${label} is for fleet "${manifest.fleetId}", but this machine belongs to fleet "${ctx.fleetId}"`,
      manifest,
    )
  }

  const byName = manifest.targets.machines.includes(ctx.machine)
  const byTag = manifest.targets.tags.some((t) => ctx.tags.includes(t))
  if (!byName && !byTag) {
    throw new ManifestRefusedError(
      'not-targeted',
      `${label} targets machines [${manifest.targets.machines.join(', ')}] and tags [${manifest.targets.tags.join(', ')}]; ` +
        `this machine is "${ctx.machine}" with tags [${ctx.tags.join(', ')}]`,
      manifest,
    )
  }

  if (now < manifest.notBefore) {
    throw new ManifestRefusedError(
      'not-yet-valid',
      `${label} is not valid before ${iso(manifest.notBefore)} (now ${iso(now)}); if this is unexpected, check this machine's clock`,
      manifest,
    )
  }
  if (now >= manifest.expiresAt) {
    throw new ManifestRefusedError(
      'expired',
      `${label} expired at ${iso(manifest.expiresAt)} (now ${iso(now)}); the admin must sign a fresh manifest`,
      manifest,
    )
  }

  if (manifest.sequence <= ctx.lastSequence) {
    throw new ManifestRefusedError(
      'replayed',
      `${label} has sequence ${manifest.sequence}, but this machine has already attempted sequence ${ctx.lastSequence}; ` +
        'older or repeated manifests are refused so a stale one cannot be replayed',
      manifest,
    )
  }

  return { manifest, envelope, signer: opened.signer, adminName }
}
