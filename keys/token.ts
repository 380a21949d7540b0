/**
 * Enrollment tokens: an admin holding `enroll` signs a token naming the machine,
 * its tags, the coordinator to contact and the fleet root to pin. The agent
 * verifies the token against the root it carries *and* the coordinator verifies
 * it against its own root, so a token made with another fleet's root is useless.
 * The text form ("fmtok1.<base64url>") pastes into a terminal in one piece.
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { describeIssues, fromBase64Url, toBase64Url, toHex } from '../lib/index.ts'
import { decodeCanonical, encodeCanonical } from './canonical.ts'
import {
  type Authority,
  type SignedCertificate,
  signedCertificateSchema,
  verifyChain,
} from './certificate.ts'
import { DOMAINS } from './domains.ts'
import { verify } from './ed25519.ts'
import { CertificateError, TokenError } from './errors.ts'
import { type PrivateKey, PublicKey } from './identity.ts'
import { bytes, machineName, publicKeyBytes, signatureBytes, tagName, timestampMs } from './schema.ts'

const TEXT_PREFIX = 'fmtok1.'
export const MAX_TOKEN_BYTES = 32 * 1024

/** The other coordinators a token may name, to enroll through when its own is unreachable. */
export const MAX_TOKEN_OTHERS = 8

const coordinatorRef = z.strictObject({
  peerId: z.string().min(1).max(128),
  addrs: z.array(z.string().min(1).max(512)).max(16),
})

const bodySchema = z.strictObject({
  v: z.literal(1),
  fleetRoot: publicKeyBytes,
  coordinator: coordinatorRef,
  /** Absent in a token that names one coordinator, so that agents before it read such tokens too. */
  others: z.array(coordinatorRef).min(1).max(MAX_TOKEN_OTHERS).optional(),
  machine: machineName,
  tags: z.array(tagName).max(64),
  issuedAt: timestampMs,
  notAfter: timestampMs,
  nonce: bytes(16),
})

const wireSchema = z.strictObject({
  body: bytes(),
  sig: signatureBytes,
  signer: publicKeyBytes,
  chain: z.array(signedCertificateSchema).min(1).max(4),
})

export interface EnrollmentToken {
  fleetRoot: PublicKey
  coordinator: { peerId: string; addrs: string[] }
  /** The fleet's other coordinators, tried in turn when `coordinator` cannot be reached (possibly none). */
  others: { peerId: string; addrs: string[] }[]
  machine: string
  tags: string[]
  issuedAt: number
  notAfter: number
  /** Hex; the coordinator accepts each nonce once. */
  nonce: string
  signer: PublicKey
  chain: SignedCertificate[]
  /** The token's text form, to present it onwards unchanged. */
  text: string
}

export interface TokenOptions {
  fleetRoot: PublicKey
  coordinator: { peerId: string; addrs: string[] }
  /** The fleet's other coordinators (the first MAX_TOKEN_OTHERS of them are named). */
  others?: readonly { peerId: string; addrs: readonly string[] }[]
  machine: string
  tags: readonly string[]
  ttlMs: number
  now?: number
}

export function issueToken(
  admin: PrivateKey,
  chain: readonly SignedCertificate[],
  options: TokenOptions,
): string {
  const now = options.now ?? Date.now()
  const others = (options.others ?? [])
    .filter((c) => c.peerId !== options.coordinator.peerId)
    .slice(0, MAX_TOKEN_OTHERS)
    .map((c) => ({ peerId: c.peerId, addrs: [...c.addrs] }))
  const raw = {
    v: 1 as const,
    fleetRoot: options.fleetRoot.bytes,
    coordinator: { peerId: options.coordinator.peerId, addrs: [...options.coordinator.addrs] },
    ...(others.length > 0 ? { others } : {}),
    machine: options.machine,
    tags: [...new Set(options.tags)].sort(),
    issuedAt: now,
    notAfter: now + options.ttlMs,
    nonce: new Uint8Array(randomBytes(16)),
  }
  const checked = bodySchema.safeParse(raw)
  if (!checked.success)
    throw new TokenError('malformed', `cannot issue token: ${describeIssues(checked.error)}`)
  const body = encodeCanonical(raw)
  const wire = encodeCanonical({
    body,
    sig: admin.sign(DOMAINS.enrollmentToken, body),
    signer: admin.publicKey.bytes,
    chain: [...chain],
  })
  if (wire.length > MAX_TOKEN_BYTES)
    throw new TokenError(
      'malformed',
      `cannot issue token: it would be ${wire.length} bytes, more than the ${MAX_TOKEN_BYTES} an agent reads (too many coordinator addresses?)`,
    )
  return TEXT_PREFIX + toBase64Url(wire)
}

/** Parses the text form and checks the token's own signature; does not check its authority. */
export function parseToken(text: string): EnrollmentToken {
  const trimmed = text.trim()
  if (!trimmed.startsWith(TEXT_PREFIX)) {
    throw new TokenError(
      'malformed',
      `an enrollment token starts with "${TEXT_PREFIX}"; check that it was pasted whole`,
    )
  }
  let wire: unknown
  try {
    const raw = fromBase64Url(trimmed.slice(TEXT_PREFIX.length))
    wire = decodeCanonical(raw, MAX_TOKEN_BYTES)
  } catch (err) {
    throw new TokenError(
      'malformed',
      `enrollment token is damaged (${(err as Error).message}); copy it again`,
      { cause: err },
    )
  }
  const w = wireSchema.safeParse(wire)
  if (!w.success) throw new TokenError('malformed', `enrollment token is invalid: ${describeIssues(w.error)}`)
  if (!verify(w.data.signer, DOMAINS.enrollmentToken, w.data.body, w.data.sig)) {
    throw new TokenError(
      'bad-signature',
      'enrollment token signature does not verify; it was altered or damaged',
    )
  }
  let bodyValue: unknown
  try {
    bodyValue = decodeCanonical(w.data.body, MAX_TOKEN_BYTES)
  } catch (err) {
    throw new TokenError('malformed', `enrollment token body is damaged: ${(err as Error).message}`, {
      cause: err,
    })
  }
  const b = bodySchema.safeParse(bodyValue)
  if (!b.success)
    throw new TokenError('malformed', `enrollment token body is invalid: ${describeIssues(b.error)}`)
  return {
    fleetRoot: PublicKey.fromBytes(b.data.fleetRoot),
    coordinator: b.data.coordinator,
    others: b.data.others ?? [],
    machine: b.data.machine,
    tags: b.data.tags,
    issuedAt: b.data.issuedAt,
    notAfter: b.data.notAfter,
    nonce: toHex(b.data.nonce),
    signer: PublicKey.fromBytes(w.data.signer),
    chain: w.data.chain,
    text: trimmed,
  }
}

export interface TokenPolicy {
  root: PublicKey
  now?: number
  revokedSerials?: ReadonlySet<string>
}

/** Checks expiry, the pinned root and that the signer may enroll this machine with these tags. */
export function verifyToken(token: EnrollmentToken, policy: TokenPolicy): Authority {
  const now = policy.now ?? Date.now()
  if (!token.fleetRoot.equals(policy.root)) {
    throw new TokenError(
      'wrong-root',
      `token is for fleet root ${token.fleetRoot}, this fleet's root is ${policy.root}`,
    )
  }
  if (now >= token.notAfter) {
    throw new TokenError(
      'expired',
      `enrollment token expired at ${new Date(token.notAfter).toISOString()}; ask an admin for a new one`,
    )
  }
  try {
    return verifyChain(token.chain, {
      root: policy.root,
      signer: token.signer,
      capability: 'enroll',
      target: { kind: 'new-machine', name: token.machine, tags: token.tags },
      now,
      ...(policy.revokedSerials ? { revokedSerials: policy.revokedSerials } : {}),
    })
  } catch (err) {
    if (err instanceof CertificateError) {
      throw new TokenError(
        'unauthorised',
        `enrollment token's signer may not enroll "${token.machine}": ${err.message}`,
        {
          cause: err,
        },
      )
    }
    throw err
  }
}
