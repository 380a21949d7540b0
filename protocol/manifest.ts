/**
 * The update manifest beyond its schema: how one is built and sealed, and the
 * one admission rule set every receiver enforces. The coordinator runs the rules
 * before it stores a manifest (so an admin learns at once, not from every device,
 * that it would be refused); the agent runs them again before it applies one,
 * trusting only the fleet root it pinned at enrollment, because the coordinator
 * merely carries manifests. What only one side can know stays with that side:
 * the coordinator's blob and sequence lookups in its store, the agent's pinned
 * root and last attempted sequence (passed in here as the policy).
 *
 * @example
 *
 * ```ts
 * const manifest = buildManifest({ fleetId: 'acme', sequence: 8, generation: 'web-2', targets, payload })
 * const envelope = sealManifest(manifest, adminKey, adminChain)
 * const { adminName } = admitManifest(envelope, {
 *   fleetRoot, fleetId: 'acme', machine: { name: 'edge-1', tags: ['lab'] }, lastSequence: 7,
 * })
 * ```
 */
import { randomBytes } from 'node:crypto'
import {
  CertificateError,
  type CertificateMemo,
  DOMAINS,
  type PrivateKey,
  type PublicKey,
  type ScopeTarget,
  type SignedCertificate,
  verifyChain,
} from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'
import { EnvelopeError, type Opened, openEnvelope, sealEnvelope } from './envelope.ts'
import type { MaintenanceWindow } from './maintenance-window.ts'
import {
  type HealthCheck,
  MAX_ENVELOPE_BYTES,
  type Manifest,
  manifestSchema,
  type Payload,
  type RevocationHead,
  type Targets,
} from './messages.ts'
import { nixStorePathFor } from './nix-payload.ts'
import type { RevocationView } from './revocation.ts'

// ---------------------------------------------------------------- building

const DAY = 86_400_000

export interface ManifestOptions {
  fleetId: string
  /** Must exceed every earlier manifest's sequence in the fleet (the coordinator's `maxSequence` + 1). */
  sequence: number
  generation: string
  targets: Targets
  payload: Payload
  /** Default: "profile" for archive payloads, "switch" for nix payloads. */
  activation?: Manifest['activation']
  /** Default: none. */
  healthCheck?: HealthCheck | null
  /** How long a machine waits to confirm the new generation before rolling back. Default 2 min. */
  confirmTimeoutMs?: number
  /** How long the manifest stays valid from `now`. Default 7 days. */
  validForMs?: number
  /** `notBefore` lies this far before `now`, so a receiver whose clock is a little behind accepts it. Default 1 min. */
  clockSkewMs?: number
  /** Default: the current time. */
  now?: number
  /** Default: 16 random bytes, hex. */
  id?: string
  /** Default: 16 random bytes, hex. */
  rolloutId?: string
  /** The head of the revocation list the signer verified; left out of the manifest when the list is empty. */
  revocations?: RevocationHead
  /** When the machines may activate it; none (or empty): at once. */
  windows?: MaintenanceWindow[]
}

const randomId = () => randomBytes(16).toString('hex')

/** A manifest with fresh ids and a validity window around `now`; sealing it validates it. */
export function buildManifest(options: ManifestOptions): Manifest {
  const now = options.now ?? Date.now()
  return {
    v: 1,
    fleetId: options.fleetId,
    id: options.id ?? randomId(),
    sequence: options.sequence,
    rolloutId: options.rolloutId ?? randomId(),
    generation: options.generation,
    targets: options.targets,
    payload: options.payload,
    activation: options.activation ?? (options.payload.kind === 'archive' ? 'profile' : 'switch'),
    healthCheck: options.healthCheck ?? null,
    confirmTimeoutMs: options.confirmTimeoutMs ?? 120_000,
    issuedAt: now,
    notBefore: now - (options.clockSkewMs ?? 60_000),
    expiresAt: now + (options.validForMs ?? 7 * DAY),
    // An empty list needs no reference, and agents older than the field refuse manifests that carry it.
    ...(options.revocations !== undefined && options.revocations.seq > 0
      ? { revocations: options.revocations }
      : {}),
    ...(options.windows !== undefined && options.windows.length > 0 ? { windows: options.windows } : {}),
  }
}

/** Signs a manifest with an admin key; `chain` is that key's certificate chain from the fleet root. */
export function sealManifest(
  manifest: Manifest,
  signer: PrivateKey,
  chain: readonly SignedCertificate[],
): Uint8Array {
  return sealEnvelope(manifestSchema, DOMAINS.manifest, manifest, signer, chain)
}

/** Whether a machine with this name and tags is one the manifest targets. */
export function targetsMachine(targets: Targets, name: string, tags: readonly string[]): boolean {
  return targets.machines.includes(name) || targets.tags.some((t) => tags.includes(t))
}

// ---------------------------------------------------------------- admission

export type ManifestRefusalCode =
  /** Not a manifest envelope: malformed, another domain, bad signature, invalid or oversized manifest. */
  | 'bad-envelope'
  /** The signer's certificate chain does not allow deploying to the target in this fleet. */
  | 'unauthorised'
  /** A certificate in the signer's chain is on the revocation list (or the coordinator's own list). */
  | 'revoked'
  /** The receiver's revocation list is shorter than the one the signer saw: it must not act yet. */
  | 'revocations-missing'
  /** The receiver's revocation list holds another entry where the signer's ended: the lists forked. */
  | 'revocations-mismatch'
  | 'wrong-fleet'
  /** (Agent) the manifest targets neither this machine's name nor any of its tags. */
  | 'not-targeted'
  | 'not-yet-valid'
  | 'expired'
  /** (Agent) the sequence is not above the last one this machine attempted. */
  | 'replayed'
  /** A closure map's machines are not exactly the manifest's targets (machines by name, no tags). */
  | 'closure-map-mismatch'

export class ManifestRefusedError extends CodedError<ManifestRefusalCode> {
  override name = 'ManifestRefusedError'
  /** The decoded manifest when the envelope could be opened, for reporting which one was refused. */
  readonly manifest: Manifest | null
  constructor(
    code: ManifestRefusalCode,
    message: string,
    manifest: Manifest | null = null,
    options?: ErrorOptions,
  ) {
    super(code, message, options)
    this.manifest = manifest
  }
}

/** What the receiver trusts and knows; the rules are the same on both sides. */
export interface AdmissionPolicy {
  fleetRoot: PublicKey
  fleetId: string
  /** Serials to refuse; default: those of `revocations`. */
  revokedSerials?: ReadonlySet<string>
  /**
   * The receiver's signed revocation list: the manifest's signer must not be on it,
   * and it must reach the head the signer saw (rules "revocations-missing" and
   * "revocations-mismatch"). Left out, a manifest's head is not checked.
   */
  revocations?: RevocationView
  now?: number
  /**
   * The agent: the machine about to apply it; the manifest must target it. The
   * coordinator leaves it out. Either way the signer must be allowed to deploy to
   * every machine and tag the manifest names (deployScope): the scope rule has no
   * input that only one side has, so the two sides cannot disagree.
   */
  machine?: { name: string; tags: readonly string[] }
  /** Where the signer's certificate links verified before are remembered (the agent keeps one). */
  certificates?: CertificateMemo
  /**
   * The agent: the highest sequence it has attempted; only later ones are admitted.
   * The coordinator leaves it out: its store orders manifests atomically as it adds them.
   */
  lastSequence?: number
}

export interface AdmittedManifest {
  manifest: Manifest
  envelope: Uint8Array
  signer: PublicKey
  /** Name in the signer's leaf certificate, for logs and reports. */
  adminName: string
}

const iso = (ms: number) => new Date(ms).toISOString()
const receiver = (policy: AdmissionPolicy) =>
  policy.machine === undefined ? 'this coordinator' : 'this machine'
const label = (m: Manifest) => `manifest ${m.id} (sequence ${m.sequence}, generation "${m.generation}")`
const bracketed = (items: readonly string[]) => `[${items.join(', ')}]`

/** Opens and validates the envelope (domain, signature, schema, size): rule "bad-envelope". */
export function openManifest(envelope: Uint8Array): Opened<Manifest> {
  try {
    return openEnvelope(manifestSchema, DOMAINS.manifest, envelope, MAX_ENVELOPE_BYTES)
  } catch (err) {
    const detail = err instanceof EnvelopeError ? `${err.code}: ${err.message}` : (err as Error).message
    throw new ManifestRefusedError('bad-envelope', `manifest envelope cannot be opened (${detail})`, null, {
      cause: err,
    })
  }
}

/**
 * The one deploy-scope rule, for the coordinator and the agent alike: a chain may
 * deploy a manifest when every link's scope covers its targets as written, each
 * machine name by name and each tag by tag (keys/certificate.ts, `selector`). A
 * tag-scoped admin may target its tags, and a machine by name only if its scope
 * names that machine. Judged from the machine's side instead ("this machine has a
 * tag in scope"), the verdict would depend on tags a machine has now, which change
 * and which the coordinator and each agent may see differently, and the admin's
 * name target would reach machines by a tag the admin never named.
 */
export function deployScope(targets: Targets): ScopeTarget {
  return { kind: 'selector', machines: targets.machines, tags: targets.tags }
}

/** Rule "unauthorised": the signer's chain, from the fleet root, grants deploy on the manifest's targets (deployScope). Returns the signer's name. */
export function checkSigner(opened: Opened<Manifest>, policy: AdmissionPolicy): string {
  const m = opened.value
  const target = deployScope(m.targets)
  try {
    return verifyChain(opened.chain, {
      root: policy.fleetRoot,
      signer: opened.signer,
      capability: 'deploy',
      target,
      now: policy.now ?? Date.now(),
      revokedSerials: policy.revokedSerials ?? policy.revocations?.revoked,
      ...(policy.certificates !== undefined ? { memo: policy.certificates } : {}),
    }).leaf.name
  } catch (err) {
    if (!(err instanceof CertificateError)) throw err
    if (err.code === 'revoked')
      throw new ManifestRefusedError(
        'revoked',
        `${label(m)} is signed by ${opened.signer}, whose certificate chain has been revoked: ${err.message}`,
        m,
        { cause: err },
      )
    const whom = `machines ${bracketed(m.targets.machines)} and tags ${bracketed(m.targets.tags)}`
    throw new ManifestRefusedError(
      'unauthorised',
      `${label(m)} is signed by ${opened.signer}, who may not deploy to ${whom} in this fleet: ${err.message}`,
      m,
      { cause: err },
    )
  }
}

/** Rule "wrong-fleet". */
export function checkFleet(manifest: Manifest, policy: AdmissionPolicy): void {
  if (manifest.fleetId !== policy.fleetId) {
    throw new ManifestRefusedError(
      'wrong-fleet',
      `${label(manifest)} is for fleet "${manifest.fleetId}", but ${receiver(policy)} belongs to fleet "${policy.fleetId}"`,
      manifest,
    )
  }
}

/**
 * Rules "revocations-missing" and "revocations-mismatch" (only with
 * `policy.revocations`): the receiver holds the revocation list at least up to the
 * head the signer saw, and the same entry there. So whoever carries the manifest
 * cannot also hold back a revocation the signer knew of. A manifest without a
 * head (an empty list, or an older admin CLI) is as one naming entry 0.
 */
export function checkRevocations(manifest: Manifest, policy: AdmissionPolicy): void {
  const held = policy.revocations
  const seen = manifest.revocations
  if (held === undefined || seen === undefined || seen.seq === 0) return
  if (held.head.seq < seen.seq)
    throw new ManifestRefusedError(
      'revocations-missing',
      `${label(manifest)} was signed knowing the revocation list up to entry ${seen.seq}, but ${receiver(policy)} ` +
        `holds it only up to entry ${held.head.seq}` +
        (policy.machine === undefined
          ? ''
          : ': the coordinator has not delivered the rest (lost in a restore, or withheld). Nothing was done; ' +
            'offered again once the entries are here, it is taken'),
      manifest,
    )
  const hash = held.hashAt(seen.seq)
  if (hash !== seen.hash)
    throw new ManifestRefusedError(
      'revocations-mismatch',
      `${label(manifest)} was signed knowing revocation list entry ${seen.seq} with hash ${seen.hash.slice(0, 12)}…, ` +
        `but ${receiver(policy)} holds another entry there (hash ${hash?.slice(0, 12)}…): the lists forked, so it is refused`,
      manifest,
    )
}

/**
 * Rule "closure-map-mismatch": a payload with a closure map (nix-payload.ts)
 * targets exactly the map's machines, by name. A tag would reach machines the map
 * has no closure for, and a machine in the map but not in the targets would have
 * its closure named without the signer's scope ever covering it.
 */
export function checkClosureMap(manifest: Manifest, policy: AdmissionPolicy): void {
  const { payload, targets } = manifest
  if (payload.kind !== 'nix' || payload.storePaths === undefined) return
  const mapped = Object.keys(payload.storePaths)
  const named = new Set(targets.machines)
  const extra = mapped.filter((m) => !named.has(m))
  const unmapped = [...named].filter((m) => nixStorePathFor(payload, m) === undefined)
  if (targets.tags.length === 0 && extra.length === 0 && unmapped.length === 0) return
  const why = [
    targets.tags.length > 0 ? `it targets tags ${bracketed(targets.tags)}` : '',
    unmapped.length > 0 ? `targets ${bracketed(unmapped)} have no closure in the map` : '',
    extra.length > 0 ? `the map names ${bracketed(extra)}, which it does not target` : '',
  ].filter((w) => w !== '')
  throw new ManifestRefusedError(
    'closure-map-mismatch',
    `${label(manifest)} carries one closure per machine, so it must target exactly the map's machines by name, ` +
      `but ${why.join('; ')}; ${receiver(policy)} refuses it. Sign it again with targets ${bracketed(mapped)}`,
    manifest,
  )
}

/** Rule "not-targeted" (only with `policy.machine`). */
export function checkTargeted(manifest: Manifest, policy: AdmissionPolicy): void {
  const machine = policy.machine
  if (machine === undefined || targetsMachine(manifest.targets, machine.name, machine.tags)) return
  throw new ManifestRefusedError(
    'not-targeted',
    `${label(manifest)} targets machines ${bracketed(manifest.targets.machines)} and tags ${bracketed(manifest.targets.tags)}; ` +
      `this machine is "${machine.name}" with tags ${bracketed(machine.tags)}`,
    manifest,
  )
}

/** Rules "not-yet-valid" and "expired": `now` lies in [notBefore, expiresAt). */
export function checkValidity(manifest: Manifest, policy: AdmissionPolicy): void {
  const now = policy.now ?? Date.now()
  if (now < manifest.notBefore) {
    throw new ManifestRefusedError(
      'not-yet-valid',
      `${label(manifest)} is not valid before ${iso(manifest.notBefore)} (now ${iso(now)}); ` +
        `if this is unexpected, check the clocks of ${receiver(policy)} and of the machine that signed it`,
      manifest,
    )
  }
  if (now >= manifest.expiresAt) {
    throw new ManifestRefusedError(
      'expired',
      `${label(manifest)} expired at ${iso(manifest.expiresAt)} (now ${iso(now)}); the admin must sign a fresh manifest`,
      manifest,
    )
  }
}

/** Rule "replayed" (only with `policy.lastSequence`): older or repeated manifests are refused. */
export function checkSequence(manifest: Manifest, policy: AdmissionPolicy): void {
  if (policy.lastSequence === undefined || manifest.sequence > policy.lastSequence) return
  throw new ManifestRefusedError(
    'replayed',
    `${label(manifest)} has sequence ${manifest.sequence}, but ${receiver(policy)} has already attempted sequence ${policy.lastSequence}; ` +
      'older or repeated manifests are refused so a stale one cannot be replayed',
    manifest,
  )
}

/**
 * Every admission rule, in order: envelope, signer (revoked or not), fleet,
 * closure map, revocation list, target, validity window, sequence. Throws ManifestRefusedError
 * naming the first rule broken.
 */
export function admitManifest(envelope: Uint8Array, policy: AdmissionPolicy): AdmittedManifest {
  const at = { ...policy, now: policy.now ?? Date.now() }
  const opened = openManifest(envelope)
  const manifest = opened.value
  const adminName = checkSigner(opened, at)
  checkFleet(manifest, at)
  checkClosureMap(manifest, at)
  checkRevocations(manifest, at)
  checkTargeted(manifest, at)
  checkValidity(manifest, at)
  checkSequence(manifest, at)
  return { manifest, envelope, signer: opened.signer, adminName }
}
