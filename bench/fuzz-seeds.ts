/**
 * Real messages of each protocol as an unauthenticated peer could make them,
 * the seeds that fuzz-frames.ts mutates: admin requests signed by a fresh key
 * (no certificate, one from a stranger's root, or one it issued itself),
 * enrollment requests with forged tokens and with a captured token that was
 * already used, agent control frames, blob requests. An attacker knows the
 * fleet's id, root key and coordinator (any token names them), so the seeds
 * use the real ones and get as far past the decoders as a stranger can.
 *
 * Signed requests carry the time they were made and the coordinator refuses
 * them as stale after five minutes, so the pool is rebuilt every minute.
 */
import { randomBytes } from 'node:crypto'
import {
  type Capability,
  DOMAINS,
  type Domain,
  encodeCanonical,
  issueCertificate,
  issueToken,
  PrivateKey,
  type PublicKey,
  type SignedCertificate,
} from '../keys/index.ts'
import {
  type AdminOp,
  adminRequestSchema,
  blobRequestSchema,
  type ControlFrame,
  controlFrameSchema,
  encodeMessage,
  enrollRequestSchema,
  sealEnvelope,
  sealManifest,
  sealRevocation,
  statusReportSchema,
  ZERO_HASH,
} from '../protocol/index.ts'
import { sampleManifest, sampleStatus } from '../testkit/fixtures.ts'

export const FUZZ_PROTOCOLS = ['admin', 'enroll', 'control', 'blob'] as const
export type FuzzProtocol = (typeof FUZZ_PROTOCOLS)[number]

/** What an attacker knows about the fleet, and what it may have captured. */
export interface SeedContext {
  fleetId: string
  fleetRoot: PublicKey
  coordinator: { peerId: string; addrs: string[] }
  /** The honest agent's enrollment token, already used (as if copied off its disk) */
  usedToken: string
  /** The honest machine's name and a blob the coordinator holds */
  machine: string
  blobSha256: string
}

/**
 * A seed: its encoded bytes, and how to make a mutated variant whose
 * signature still verifies (the payload is re-signed by the seed's own key),
 * which reaches the checks after the signature.
 */
export interface Seed {
  bytes: Uint8Array
  /** The signed payload's value and a function that seals a replacement of it */
  signed?: { value: unknown; reseal: (value: unknown) => Uint8Array }
}

const POOL_SIZE = 12
const REFRESH_MS = 60_000
const ALL_CAPS: Capability[] = ['admin', 'deploy', 'enroll', 'read']
const hex = (n: number) => randomBytes(n).toString('hex')

/** A signed envelope built by hand, so a payload that fails its schema can still be signed. */
function envelope(domain: Domain, payload: unknown, key: PrivateKey, chain: SignedCertificate[]): Uint8Array {
  const bytes = encodeCanonical(payload)
  return encodeCanonical({
    v: 1,
    domain,
    payload: bytes,
    signer: key.publicKey.bytes,
    sig: key.sign(domain, bytes),
    chain,
  })
}

/** No certificate, one from a stranger's root, or one the key issued itself. */
function strangerChain(key: PrivateKey): SignedCertificate[] {
  const cert = (issuer: PrivateKey) =>
    issueCertificate(issuer, {
      subject: key.publicKey,
      name: 'fuzz',
      capabilities: ALL_CAPS,
      scope: { all: true },
      notAfter: Date.now() + 3_600_000,
    })
  const pick = Math.random()
  if (pick < 0.34) return []
  if (pick < 0.67) return [cert(PrivateKey.generate())]
  return [cert(key)]
}

function adminOps(ctx: SeedContext, key: PrivateKey, chain: SignedCertificate[]): AdminOp[] {
  const manifest = sampleManifest({ fleetId: ctx.fleetId, targets: { machines: [ctx.machine], tags: [] } })
  const entry = sealRevocation(
    { v: 1, fleetId: ctx.fleetId, seq: 1, prev: ZERO_HASH, serial: hex(16), reason: 'fuzz', at: Date.now() },
    key,
    chain,
  )
  const storePath = '/nix/store/0c7x8b3qjfhs9w6dzd7a7y8k7l2x1v0m-nixos-system-edge-24.11'
  return [
    { op: 'fleet-info' },
    { op: 'machines' },
    { op: 'submit-manifest', envelope: sealManifest(manifest, key, chain) },
    { op: 'watch', rolloutId: null },
    { op: 'audit', after: 0, limit: 100 },
    { op: 'audit-reads', limit: 10 },
    { op: 'revoke', serial: hex(16), reason: 'fuzz', entry },
    { op: 'revocations', after: 0, limit: 10 },
    { op: 'nix-missing', storePaths: [storePath] },
    { op: 'nix-put', narinfos: [`StorePath: ${storePath}\n`] },
    { op: 'nix-closure', storePath },
    { op: 'machine-log', machine: ctx.machine },
    { op: 'ping', machine: ctx.machine, count: 3 },
    { op: 'doctor', machine: ctx.machine },
    { op: 'upload-blob', sha256: ctx.blobSha256, size: 1024 },
  ]
}

function adminSeed(ctx: SeedContext): Seed {
  const key = PrivateKey.generate()
  const chain = strangerChain(key)
  const ops = adminOps(ctx, key, chain)
  const body = ops[Math.floor(Math.random() * ops.length)] as AdminOp
  const value = { v: 1 as const, nonce: hex(16), issuedAt: Date.now(), body }
  return {
    bytes: sealEnvelope(adminRequestSchema, DOMAINS.adminRequest, value, key, chain),
    signed: { value, reseal: (v) => envelope(DOMAINS.adminRequest, v, key, chain) },
  }
}

function enrollSeed(ctx: SeedContext): Seed {
  const facts = { hostname: 'fuzz', os: 'linux', arch: 'x64' }
  if (Math.random() < 0.25)
    return { bytes: encodeMessage(enrollRequestSchema, { t: 'enroll', token: ctx.usedToken, facts }) }
  const key = PrivateKey.generate()
  const token = issueToken(
    key,
    [
      issueCertificate(PrivateKey.generate(), {
        subject: key.publicKey,
        name: 'fuzz',
        capabilities: ALL_CAPS,
        scope: { all: true },
        notAfter: Date.now() + 3_600_000,
      }),
    ],
    {
      fleetRoot: ctx.fleetRoot,
      coordinator: ctx.coordinator,
      // the honest machine's own name: a forged token must not take it over
      machine: Math.random() < 0.5 ? ctx.machine : `fuzz-${hex(3)}`,
      tags: ['lab'],
      ttlMs: 3_600_000,
    },
  )
  return { bytes: encodeMessage(enrollRequestSchema, { t: 'enroll', token, facts }) }
}

function controlSeed(ctx: SeedContext): Seed {
  const key = PrivateKey.generate()
  const status = sampleStatus({ machine: ctx.machine })
  const frames: ControlFrame[] = [
    {
      t: 'hello',
      wire: 1,
      role: 'agent',
      software: 'fuzz',
      capabilities: ['diagnose'],
      machine: ctx.machine,
    },
    { t: 'status', envelope: sealEnvelope(statusReportSchema, DOMAINS.status, status, key) },
    { t: 'ack', seq: 1 },
    { t: 'ping', nonce: 7 },
    { t: 'pong', nonce: 7 },
    { t: 'diagnose', nonce: 1 },
    { t: 'error', error: { code: 'fuzz', message: 'fuzz' } },
    { t: 'revocations', entries: [randomBytes(64)] },
  ]
  const frame = frames[Math.floor(Math.random() * frames.length)] as ControlFrame
  if (frame.t === 'status')
    return {
      bytes: encodeMessage(controlFrameSchema, frame),
      signed: {
        value: status,
        reseal: (v) => encodeCanonical({ t: 'status', envelope: envelope(DOMAINS.status, v, key, []) }),
      },
    }
  return { bytes: encodeMessage(controlFrameSchema, frame) }
}

function blobSeed(ctx: SeedContext): Seed {
  const sha256 = Math.random() < 0.5 ? ctx.blobSha256 : hex(32)
  const offset = [0, 1, 1023, 2 ** 31, 2 ** 40][Math.floor(Math.random() * 5)] as number
  return { bytes: encodeMessage(blobRequestSchema, { t: 'get', sha256, offset }) }
}

const MAKERS: Record<FuzzProtocol, (ctx: SeedContext) => Seed> = {
  admin: adminSeed,
  enroll: enrollSeed,
  control: controlSeed,
  blob: blobSeed,
}

/** A pool of seeds per protocol, rebuilt when it is a minute old. */
export class SeedPool {
  readonly #ctx: SeedContext
  #pools: Record<FuzzProtocol, Seed[]> | undefined
  #builtAt = 0

  constructor(ctx: SeedContext) {
    this.#ctx = ctx
  }

  pick(protocol: FuzzProtocol): Seed {
    if (this.#pools === undefined || Date.now() - this.#builtAt > REFRESH_MS) {
      const build = (p: FuzzProtocol) => Array.from({ length: POOL_SIZE }, () => MAKERS[p](this.#ctx))
      this.#pools = {
        admin: build('admin'),
        enroll: build('enroll'),
        control: build('control'),
        blob: build('blob'),
      }
      this.#builtAt = Date.now()
    }
    const pool = this.#pools[protocol]
    return pool[Math.floor(Math.random() * pool.length)] as Seed
  }
}
