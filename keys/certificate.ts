/**
 * Admin certificates: the fleet root key (kept offline by the operator) signs
 * certificates that grant an admin key capabilities on a scope of machines for a
 * time window. An admin holding `admin` may issue narrower certificates in turn,
 * so a chain is root → cert → … → cert; every link must be valid, and the
 * effective grant is what every link allows (intersection), never more.
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { describeIssues, toHex } from '../lib/index.ts'
import { decodeCanonical, encodeCanonical } from './canonical.ts'
import type { CertificateMemo } from './certificate-memo.ts'
import { DOMAINS } from './domains.ts'
import { verify } from './ed25519.ts'
import { CertificateError } from './errors.ts'
import type { PrivateKey } from './identity.ts'
import { PublicKey } from './identity.ts'
import { bytes, machineName, publicKeyBytes, signatureBytes, tagName, timestampMs } from './schema.ts'

export const CAPABILITIES = ['deploy', 'enroll', 'read', 'admin'] as const
export type Capability = (typeof CAPABILITIES)[number]

export const MAX_CHAIN_LENGTH = 4
export const MAX_CERTIFICATE_BYTES = 16 * 1024
const MAX_SCOPE_ENTRIES = 1024

export const scopeSchema = z.union([
  z.strictObject({ all: z.literal(true) }),
  z.strictObject({
    machines: z.array(machineName).max(MAX_SCOPE_ENTRIES),
    tags: z.array(tagName).max(MAX_SCOPE_ENTRIES),
  }),
])
export type Scope = z.infer<typeof scopeSchema>

const bodySchema = z
  .strictObject({
    v: z.literal(1),
    serial: z.string().regex(/^[0-9a-f]{32}$/, '32 lowercase hex digits'),
    name: z.string().min(1).max(128),
    subject: publicKeyBytes,
    issuer: publicKeyBytes,
    capabilities: z.array(z.enum(CAPABILITIES)).min(1).max(CAPABILITIES.length),
    scope: scopeSchema,
    notBefore: timestampMs,
    notAfter: timestampMs,
  })
  .refine((b) => b.notAfter > b.notBefore, {
    message: 'notAfter must be later than notBefore',
    path: ['notAfter'],
  })
  .refine((b) => new Set(b.capabilities).size === b.capabilities.length, {
    message: 'capabilities repeat',
    path: ['capabilities'],
  })

export interface Certificate {
  serial: string
  name: string
  subject: PublicKey
  issuer: PublicKey
  capabilities: readonly Capability[]
  scope: Scope
  notBefore: number
  notAfter: number
}

/** The wire form: the exact signed body bytes plus the issuer's signature over them. */
export const signedCertificateSchema = z.strictObject({
  body: bytes().refine((b) => b.byteLength <= MAX_CERTIFICATE_BYTES, {
    message: 'certificate body too large',
  }),
  sig: signatureBytes,
})
export type SignedCertificate = z.infer<typeof signedCertificateSchema>

export interface IssueOptions {
  subject: PublicKey
  name: string
  capabilities: readonly Capability[]
  scope: Scope
  notBefore?: number
  notAfter: number
  serial?: string
}

export function issueCertificate(issuer: PrivateKey, options: IssueOptions): SignedCertificate {
  const raw = {
    v: 1 as const,
    serial: options.serial ?? toHex(randomBytes(16)),
    name: options.name,
    subject: options.subject.bytes,
    issuer: issuer.publicKey.bytes,
    capabilities: [...new Set(options.capabilities)].sort(),
    scope: 'all' in options.scope ? { all: true as const } : normaliseScope(options.scope),
    notBefore: options.notBefore ?? Date.now() - 60_000,
    notAfter: options.notAfter,
  }
  const checked = bodySchema.safeParse(raw)
  if (!checked.success) {
    throw new CertificateError('malformed', `cannot issue certificate: ${describeIssues(checked.error)}`)
  }
  const body = encodeCanonical(raw)
  return { body, sig: issuer.sign(DOMAINS.certificate, body) }
}

function normaliseScope(scope: { machines: readonly string[]; tags: readonly string[] }): Scope {
  return { machines: [...new Set(scope.machines)].sort(), tags: [...new Set(scope.tags)].sort() }
}

/** Decodes and validates a certificate body; does not check its signature or validity window. */
export function decodeCertificate(signed: SignedCertificate): Certificate {
  let value: unknown
  try {
    value = decodeCanonical(signed.body, MAX_CERTIFICATE_BYTES)
  } catch (err) {
    throw new CertificateError('malformed', `certificate is not canonical CBOR: ${(err as Error).message}`, {
      cause: err,
    })
  }
  const parsed = bodySchema.safeParse(value)
  if (!parsed.success) {
    throw new CertificateError('malformed', `certificate body is invalid: ${describeIssues(parsed.error)}`)
  }
  const b = parsed.data
  return {
    serial: b.serial,
    name: b.name,
    subject: PublicKey.fromBytes(b.subject),
    issuer: PublicKey.fromBytes(b.issuer),
    capabilities: b.capabilities,
    scope: b.scope,
    notBefore: b.notBefore,
    notAfter: b.notAfter,
  }
}

/**
 * What an action touches, for the scope check. Two rules, one per kind of action:
 *
 * - `machine`: seeing or asking one enrolled machine (machines, watch, ping, logs) is
 *   covered when the scope names the machine or any tag it carries now.
 * - `selector`: a manifest's targets as written (protocol/manifest.ts `deployScope`,
 *   the one deploy rule of the coordinator and the agents) are covered only when
 *   every machine name is named by the scope and every tag is a tag of the scope.
 *   What a target may ever reach is then within scope whatever tags machines get
 *   later, and the verdict needs nothing but the manifest and the chain.
 */
export type ScopeTarget =
  | { kind: 'machine'; name: string; tags: readonly string[] }
  | { kind: 'selector'; machines: readonly string[]; tags: readonly string[] }
  | { kind: 'fleet' }
  /**
   * Enrolling a machine: every tag it gets must be in scope (else an admin scoped to
   * "lab" could place a device in "prod"), and the result must be covered by name or tag.
   */
  | { kind: 'new-machine'; name: string; tags: readonly string[] }

export function scopeCovers(scope: Scope, target: ScopeTarget): boolean {
  if ('all' in scope) return true
  switch (target.kind) {
    case 'fleet':
      return false
    case 'machine':
      return scope.machines.includes(target.name) || target.tags.some((t) => scope.tags.includes(t))
    case 'selector':
      return (
        target.machines.every((m) => scope.machines.includes(m)) &&
        target.tags.every((t) => scope.tags.includes(t))
      )
    case 'new-machine':
      return (
        target.tags.every((t) => scope.tags.includes(t)) &&
        (scope.machines.includes(target.name) || target.tags.length > 0)
      )
  }
}

export interface ChainPolicy {
  root: PublicKey
  /** The key that signed the message the chain is presented with. */
  signer: PublicKey
  capability: Capability
  /** Omit to skip the scope check (the caller filters results by scope instead). */
  target?: ScopeTarget
  now?: number
  revokedSerials?: ReadonlySet<string>
  /** Where links verified before are remembered (an agent's, across the manifests it is shown). */
  memo?: CertificateMemo
}

export interface Authority {
  /** The leaf certificate: who is acting. */
  leaf: Certificate
  chain: readonly Certificate[]
  /** Scopes of every link; an action must be covered by all of them. */
  scopes: readonly Scope[]
}

export function authorityCovers(authority: Authority, target: ScopeTarget): boolean {
  return authority.scopes.every((s) => scopeCovers(s, target))
}

/** Every link's scope is the whole fleet: nothing in the fleet is outside this admin's reach. */
export function authorityIsFleetWide(authority: Authority): boolean {
  return authority.scopes.every((s) => 'all' in s)
}

/**
 * Some non-empty selector is covered by every link: one machine name or one tag
 * that all links share. Without one the admin cannot deploy anywhere, whatever
 * its capabilities say (the links' scopes do not overlap, or one is empty).
 */
export function authorityCoversSomeSelector(authority: Authority): boolean {
  const bounded = authority.scopes.filter((s) => !('all' in s))
  const [first, ...rest] = bounded
  if (first === undefined || 'all' in first) return true
  const shared = (pick: (s: { machines: string[]; tags: string[] }) => string[]) =>
    pick(first).some((x) => rest.every((s) => !('all' in s) && pick(s).includes(x)))
  return shared((s) => s.machines) || shared((s) => s.tags)
}

/**
 * Checks again, at `now`, what can change after verifyChain accepted a chain:
 * a link revoked since, or expired since. Long-lived admin streams (watch) call
 * it while they run; throws CertificateError 'revoked' or 'expired'.
 */
export function recheckAuthority(
  authority: Authority,
  policy: { now: number; revokedSerials: ReadonlySet<string> },
): void {
  for (const cert of authority.chain) {
    const label = `certificate ${cert.serial} ("${cert.name}")`
    if (policy.revokedSerials.has(cert.serial))
      throw new CertificateError('revoked', `${label} has been revoked`)
    if (policy.now >= cert.notAfter)
      throw new CertificateError('expired', `${label} expired at ${new Date(cert.notAfter).toISOString()}`)
  }
}

/** When the first link of the chain expires. */
export function authorityExpiresAt(authority: Authority): number {
  return Math.min(...authority.chain.map((c) => c.notAfter))
}

/**
 * Verifies root → chain[0] → … → chain[n-1] and that chain[n-1] is the signer's
 * certificate, granting `capability` on `target` at `now`. Throws CertificateError
 * naming the first problem found.
 */
export function verifyChain(chain: readonly SignedCertificate[], policy: ChainPolicy): Authority {
  if (chain.length === 0) throw new CertificateError('empty-chain', 'no certificate presented')
  if (chain.length > MAX_CHAIN_LENGTH) {
    throw new CertificateError(
      'chain-too-long',
      `certificate chain has ${chain.length} links; at most ${MAX_CHAIN_LENGTH}`,
    )
  }
  const now = policy.now ?? Date.now()
  let expectedIssuer = policy.root
  const certs: Certificate[] = []
  for (const [i, signed] of chain.entries()) {
    const remembered = policy.memo?.get(signed)
    const cert = remembered ?? decodeCertificate(signed)
    const label = `certificate ${cert.serial} ("${cert.name}")`
    if (!cert.issuer.equals(expectedIssuer)) {
      throw new CertificateError(
        'wrong-issuer',
        i === 0
          ? `${label} was issued by ${cert.issuer}, not by this fleet's root key ${expectedIssuer}`
          : `${label} was issued by ${cert.issuer}, but the previous link's subject is ${expectedIssuer}`,
      )
    }
    if (remembered === undefined) {
      if (!verify(cert.issuer.bytes, DOMAINS.certificate, signed.body, signed.sig)) {
        throw new CertificateError(
          'bad-signature',
          `${label}: signature does not verify against its issuer ${cert.issuer}`,
        )
      }
      policy.memo?.verified(signed, cert)
    }
    if (policy.revokedSerials?.has(cert.serial)) {
      throw new CertificateError('revoked', `${label} has been revoked`)
    }
    if (now < cert.notBefore) {
      throw new CertificateError(
        'not-yet-valid',
        `${label} is not valid until ${new Date(cert.notBefore).toISOString()}`,
      )
    }
    if (now >= cert.notAfter) {
      throw new CertificateError('expired', `${label} expired at ${new Date(cert.notAfter).toISOString()}`)
    }
    if (i < chain.length - 1 && !cert.capabilities.includes('admin')) {
      throw new CertificateError(
        'capability-missing',
        `${label} issues a further certificate but lacks the "admin" capability needed to delegate`,
      )
    }
    if (!cert.capabilities.includes(policy.capability)) {
      throw new CertificateError('capability-missing', `${label} does not grant "${policy.capability}"`)
    }
    certs.push(cert)
    expectedIssuer = cert.subject
  }
  const leaf = certs[certs.length - 1] as Certificate
  if (!leaf.subject.equals(policy.signer)) {
    throw new CertificateError(
      'signer-mismatch',
      `certificate ${leaf.serial} belongs to ${leaf.subject}, but the message was signed by ${policy.signer}`,
    )
  }
  const authority: Authority = { leaf, chain: certs, scopes: certs.map((c) => c.scope) }
  if (policy.target !== undefined && !authorityCovers(authority, policy.target)) {
    throw new CertificateError(
      'out-of-scope',
      `certificate ${leaf.serial} ("${leaf.name}") does not cover ${describeTarget(policy.target)}`,
    )
  }
  return authority
}

function describeTarget(target: ScopeTarget): string {
  switch (target.kind) {
    case 'fleet':
      return 'the whole fleet'
    case 'machine':
      return `machine "${target.name}"${target.tags.length > 0 ? ` (tags ${target.tags.join(', ')})` : ''}`
    case 'selector':
      return `machines [${target.machines.join(', ')}] and tags [${target.tags.join(', ')}]`
    case 'new-machine':
      return `a new machine "${target.name}" with tags [${target.tags.join(', ')}]`
  }
}
