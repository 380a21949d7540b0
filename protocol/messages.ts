/**
 * Message schemas, version 1. Every message is a CBOR map validated here at
 * decode time; a failure names the path of the bad field. Sizes of every string,
 * list and map are bounded so a peer cannot make us hold large structures.
 */
import { z } from 'zod'
import { bytes, machineName, publicKeyBytes, tagName, timestampMs } from '../keys/index.ts'
import { maintenanceWindowsSchema } from './maintenance-window.ts'
import { MAX_NARINFO_BYTES } from './narinfo.ts'
import { nixPayloadSchema, storePath } from './nix-payload.ts'
import { MAX_REPORT_LOG, updateLogFrame } from './update-log.ts'
import { UPDATE_STATES } from './update-states.ts'
import { MAX_ROLLBACK_MANIFESTS, wavePolicySchema } from './wave-policy.ts'

// Defined with the nix payload; still here for the modules that import them from here.
export { nixPublicKeyText, storePath } from './nix-payload.ts'

export const MAX_ENVELOPE_BYTES = 256 * 1024
export const MAX_ERROR_MESSAGE = 2048
/**
 * Read summaries one `audit-reads` answer holds: each is under 1 KiB (its detail
 * is cut to 200 characters), so they fit one 256 KiB frame.
 */
export const MAX_AUDIT_READS = 200
export { MAX_REPORT_LOG } from './update-log.ts'
/**
 * Reports one `machine-history` answer holds: without their logs (machine-log
 * has the last one) each is well under 4 KiB, so they fit one frame.
 */
export const MAX_MACHINE_HISTORY = 100
/** Probes one `ping` request may ask for; each waits at most a few seconds, so the request stays short. */
export const MAX_PING_COUNT = 10

const hex = (length: number) =>
  z.string().regex(new RegExp(`^[0-9a-f]{${length}}$`), `${length} lowercase hex digits`)
export const idHex = hex(32)
export const sha256Hex = hex(64)
const shortText = z.string().max(256)
const seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
/** Sizes and offsets of blobs: up to 1 TiB. */
const byteCount = z
  .number()
  .int()
  .nonnegative()
  .max(2 ** 40)

export const errorInfo = z.strictObject({
  code: z.string().min(1).max(64),
  message: z.string().max(MAX_ERROR_MESSAGE),
})
export type ErrorInfo = z.infer<typeof errorInfo>

/** A response that is either `{ ok: true, ...fields }` or `{ ok: false, error }`. */
function okOrError<T extends z.ZodRawShape>(fields: T) {
  return z.discriminatedUnion('ok', [
    z.strictObject({ ok: z.literal(true), ...fields }),
    z.strictObject({ ok: z.literal(false), error: errorInfo }),
  ])
}

// ---------------------------------------------------------------- revocation list (protocol/revocation.ts)

/** Entries the fleet's signed revocation list may hold; the coordinator refuses more. */
export const MAX_REVOCATIONS = 10_000
/** The largest signed revocation entry: the entry and its signer's certificate chain. */
export const MAX_REVOCATION_BYTES = 128 * 1024
/** Entries one `revocations` frame or answer carries at most (and about 128 KiB of them, see revocation.ts). */
export const MAX_REVOCATIONS_PER_FRAME = 256

/** A position in the revocation list: entry `seq` and its hash (seq 0: the empty list, hash all zeros). */
export const revocationHeadSchema = z.strictObject({ seq: seq.max(MAX_REVOCATIONS), hash: sha256Hex })
export type RevocationHead = z.infer<typeof revocationHeadSchema>

/** A signed revocation entry (an envelope), carried as opaque bytes. */
export const revocationBytes = bytes().refine((b) => b.byteLength <= MAX_REVOCATION_BYTES, {
  message: 'revocation entry too large',
})

// ---------------------------------------------------------------- update manifest

export const targetsSchema = z
  .strictObject({
    machines: z.array(machineName).max(10_000),
    tags: z.array(tagName).max(256),
  })
  .refine((t) => t.machines.length + t.tags.length > 0, {
    message: 'a manifest must target at least one machine or tag',
  })
export type Targets = z.infer<typeof targetsSchema>

export const blobSource = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('coordinator') }),
  z.strictObject({ kind: z.literal('http'), url: z.url({ protocol: /^https?$/ }).max(2048) }),
])
export type BlobSource = z.infer<typeof blobSource>

export const payloadSchema = z.discriminatedUnion('kind', [
  nixPayloadSchema,
  z.strictObject({
    kind: z.literal('archive'),
    sha256: sha256Hex,
    size: byteCount,
    sources: z.array(blobSource).min(1).max(8),
  }),
])
export type Payload = z.infer<typeof payloadSchema>

export const healthCheckSchema = z.strictObject({
  /** argv, run without a shell, in the new generation's directory. */
  command: z.array(z.string().max(4096)).min(1).max(64),
  timeoutMs: z.number().int().min(100).max(3_600_000),
  retries: z.number().int().min(0).max(100),
  intervalMs: z.number().int().min(0).max(600_000),
})
export type HealthCheck = z.infer<typeof healthCheckSchema>

export const ACTIVATION_MODES = ['profile', 'switch', 'boot', 'test'] as const

export const manifestSchema = z
  .strictObject({
    v: z.literal(1),
    fleetId: shortText.min(1),
    id: idHex,
    sequence: seq.min(1),
    rolloutId: idHex,
    generation: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[A-Za-z0-9._+-]+$/, 'letters, digits and . _ + -'),
    targets: targetsSchema,
    payload: payloadSchema,
    activation: z.enum(ACTIVATION_MODES),
    healthCheck: healthCheckSchema.nullable(),
    confirmTimeoutMs: z.number().int().min(1000).max(86_400_000),
    issuedAt: timestampMs,
    notBefore: timestampMs,
    expiresAt: timestampMs,
    /**
     * The revocation list as the signing admin saw it: an agent acts on the manifest
     * only once it holds the list up to here, so the coordinator cannot withhold an
     * older revocation. Absent: nothing revoked yet (or an older admin CLI).
     */
    revocations: revocationHeadSchema.optional(),
    /** When machines may activate it (maintenance-window.ts); absent: at once. Agents before it refuse it. */
    windows: maintenanceWindowsSchema.optional(),
  })
  .refine((m) => m.expiresAt > m.notBefore, {
    message: 'expiresAt must be later than notBefore',
    path: ['expiresAt'],
  })
  .refine((m) => (m.payload.kind === 'nix') === (m.activation !== 'profile'), {
    message: 'activation "profile" goes with archive payloads, "switch"/"boot"/"test" with nix payloads',
    path: ['activation'],
  })
export type Manifest = z.infer<typeof manifestSchema>

// ---------------------------------------------------------------- status report

export { UPDATE_STATES, type UpdateState } from './update-states.ts'

export const statusReportSchema = z.strictObject({
  v: z.literal(1),
  machine: machineName,
  /** Per-agent report counter; the coordinator acknowledges by it and drops duplicates. */
  seq: seq.min(1),
  state: z.enum(UPDATE_STATES),
  currentGeneration: z.string().max(128).nullable(),
  desiredGeneration: z.string().max(128).nullable(),
  manifestId: idHex.nullable(),
  manifestSequence: seq.nullable(),
  rolloutId: idHex.nullable(),
  progress: z.strictObject({ done: seq, total: seq }).nullable(),
  error: errorInfo.nullable(),
  /**
   * What the update printed that the operator should see: an activation's
   * output (switch-to-configuration), what was fetched, why it failed. Bounded;
   * the tail is kept.
   */
  log: z.string().max(MAX_REPORT_LOG).optional(),
  /** The update is installed but takes effect only after a reboot (NixOS `boot` mode). */
  rebootRequired: z.boolean().optional(),
  facts: z.record(z.string().max(64), z.string().max(1024)).refine((f) => Object.keys(f).length <= 64, {
    message: 'at most 64 facts',
  }),
  timestamp: timestampMs,
})
export type StatusReport = z.infer<typeof statusReportSchema>

// ---------------------------------------------------------------- control protocol frames

/** How a connection reaches its peer: directly, or through a circuit relay. */
export const CONNECTION_PATHS = ['direct', 'relayed'] as const
export type ConnectionPath = (typeof CONNECTION_PATHS)[number]
export const connectionPathSchema = z.enum(CONNECTION_PATHS)

export const ROLES = ['coordinator', 'agent', 'admin', 'relay'] as const
export type Role = (typeof ROLES)[number]

export const helloSchema = z.strictObject({
  t: z.literal('hello'),
  wire: z.number().int().min(1).max(1000),
  role: z.enum(ROLES),
  software: shortText,
  capabilities: z.array(z.string().max(64)).max(32),
  machine: machineName.optional(),
  /**
   * Coordinator: the highest status seq it has stored for the machine. The agent
   * drops what that covers, or, if its own numbering went back (a lost counter),
   * renumbers its queued reports above it: numbering always continues above.
   */
  lastAckedSeq: seq.optional(),
  /**
   * Agent: the head of the revocation list it holds. Coordinator, only to an agent
   * that sent its own: the head of the coordinator's list, whose missing entries follow.
   */
  revocations: revocationHeadSchema.optional(),
})
export type Hello = z.infer<typeof helloSchema>

/** Signed envelopes travel as opaque bytes inside control frames and are opened by envelope.ts. */
const envelopeBytes = bytes().refine((b) => b.byteLength <= MAX_ENVELOPE_BYTES, {
  message: 'envelope too large',
})

/** A release's policy and its held rollback manifests, for submit-waves and apply. */
const submitWavesFields = z.strictObject({
  policy: wavePolicySchema,
  rollbacks: z.array(envelopeBytes).max(MAX_ROLLBACK_MANIFESTS),
})

// ---------------------------------------------------------------- diagnosis (`fleetmesh doctor <machine>`)

/** The largest encoded diagnosis an agent sends; it leaves connections and details out to fit. */
export const MAX_DIAGNOSIS_BYTES = 64 * 1024
/** The capability an agent's hello names when it answers `diagnose` frames. */
export const DIAGNOSE_CAPABILITY = 'diagnose'

const addrText = z.string().max(1024)
const peerIdText = z.string().max(128)

/** A runtime snapshot as sent over the wire: net/runtime.ts's RuntimeSnapshot, bounded. */
export const runtimeViewSchema = z.strictObject({
  role: z.enum(['coordinator', 'agent', 'relay']),
  pid: z.number().int().nonnegative(),
  peerId: peerIdText,
  at: timestampMs,
  listen: z.array(addrText).max(64),
  advertised: z.array(addrText).max(64),
  connections: z
    .array(
      z.strictObject({
        peer: peerIdText,
        remoteAddr: addrText,
        direction: z.enum(['inbound', 'outbound']),
        relayed: z.boolean(),
      }),
    )
    .max(256),
  /** Role-specific state (the link to the coordinator, hole punching), as plain JSON. */
  details: z.record(z.string().max(64), z.json()).refine((d) => Object.keys(d).length <= 16, {
    message: 'at most 16 detail entries',
  }),
})
export type RuntimeView = z.infer<typeof runtimeViewSchema>

/**
 * What an agent answers a `diagnose` frame with: its runtime snapshot (what
 * `doctor --state` reads from runtime.json), its interfaces and the coordinator
 * addresses it dials. Nothing secret: no keys, tokens or environment.
 */
export const agentDiagnosisSchema = z.strictObject({
  machine: machineName,
  software: shortText,
  snapshot: runtimeViewSchema,
  /** The device's non-loopback interfaces, "address/netmask". */
  interfaces: z.array(z.strictObject({ name: z.string().max(64), address: z.string().max(128) })).max(64),
  coordinator: z.strictObject({ peerId: peerIdText, addrs: z.array(addrText).max(16) }),
  /** Connections or details were left out to fit MAX_DIAGNOSIS_BYTES. */
  truncated: z.boolean(),
})
export type AgentDiagnosis = z.infer<typeof agentDiagnosisSchema>

export const controlFrameSchema = z.discriminatedUnion('t', [
  helloSchema,
  z.strictObject({ t: z.literal('manifest'), envelope: envelopeBytes }),
  z.strictObject({ t: z.literal('status'), envelope: envelopeBytes }),
  z.strictObject({ t: z.literal('ack'), seq }),
  z.strictObject({ t: z.literal('ping'), nonce: seq }),
  z.strictObject({ t: z.literal('pong'), nonce: seq }),
  z.strictObject({ t: z.literal('error'), error: errorInfo }),
  z.strictObject({ t: z.literal('machine-tags'), envelope: envelopeBytes }),
  /** The fleet root's signed coordinator list (coordinator-list.ts), to agents that asked for it. */
  z.strictObject({ t: z.literal('coordinators'), envelope: envelopeBytes }),
  /** Coordinator → agent (only to agents whose hello names DIAGNOSE_CAPABILITY); answered by `diagnosis`. */
  z.strictObject({ t: z.literal('diagnose'), nonce: seq }),
  z.strictObject({ t: z.literal('diagnosis'), nonce: seq, report: agentDiagnosisSchema }),
  /**
   * Consecutive entries of the revocation list. Coordinator → agent: the ones it lacks,
   * after hello and before any manifest, and each new one. Agent → coordinator: the
   * ones a coordinator restored from a backup lost.
   */
  z.strictObject({
    t: z.literal('revocations'),
    entries: z.array(revocationBytes).min(1).max(MAX_REVOCATIONS_PER_FRAME),
  }),
  /** Agent → coordinator: a running update's output, live and not durable (protocol/update-log.ts). */
  updateLogFrame,
])
export type ControlFrame = z.infer<typeof controlFrameSchema>

// ---------------------------------------------------------------- enrollment

export const enrollRequestSchema = z.strictObject({
  t: z.literal('enroll'),
  token: z
    .string()
    .min(1)
    .max(48 * 1024),
  /** Facts the agent reports about itself at enrollment (hostname, os, arch). */
  facts: z.record(z.string().max(64), z.string().max(1024)).refine((f) => Object.keys(f).length <= 64),
})
export type EnrollRequest = z.infer<typeof enrollRequestSchema>

export const enrollResponseSchema = okOrError({
  machine: machineName,
  fleetId: shortText,
  fleetRoot: publicKeyBytes,
})
export type EnrollResponse = z.infer<typeof enrollResponseSchema>

// ---------------------------------------------------------------- admin protocol

export const adminOpSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('fleet-info') }),
  z.strictObject({ op: z.literal('machines') }),
  z.strictObject({ op: z.literal('submit-manifest'), envelope: envelopeBytes }),
  /** With `machine`: only that machine's events, and the output of its running updates (update-log). */
  z.strictObject({ op: z.literal('watch'), rolloutId: idHex.nullable(), machine: machineName.optional() }),
  /** Hash-chained records after index `after`: at most `limit`, and no more than fit one response frame. */
  z.strictObject({ op: z.literal('audit'), after: seq, limit: z.number().int().min(1).max(10_000) }),
  /** The newest summaries of successful reads, which are counted apart from the hash-chained log. */
  z.strictObject({ op: z.literal('audit-reads'), limit: z.number().int().min(1).max(MAX_AUDIT_READS) }),
  /** With `entry` (the signed next entry of the revocation list, for this serial and reason) agents learn it too. */
  z.strictObject({
    op: z.literal('revoke'),
    serial: hex(32),
    reason: shortText,
    entry: revocationBytes.optional(),
  }),
  /** The head of the revocation list and its entries after `after`: at most `limit`, and no more than fit a frame. */
  z.strictObject({
    op: z.literal('revocations'),
    after: seq,
    limit: z.number().int().min(1).max(MAX_REVOCATIONS_PER_FRAME),
  }),
  /** Upload of a content-addressed blob follows this request on the same stream. */
  /** Which of these store paths the coordinator's binary cache lacks (narinfo or NAR). */
  z.strictObject({ op: z.literal('nix-missing'), storePaths: z.array(storePath).min(1).max(2000) }),
  /** Narinfos for NARs already uploaded as blobs; each names its NAR by FileHash. */
  z.strictObject({
    op: z.literal('nix-put'),
    narinfos: z.array(z.string().max(MAX_NARINFO_BYTES)).min(1).max(512),
  }),
  /** Whether the cache holds the whole closure of a store path. */
  z.strictObject({ op: z.literal('nix-closure'), storePath }),
  /** The last update log a machine reported. */
  z.strictObject({ op: z.literal('machine-log'), machine: machineName }),
  /** A machine's newest reports, newest first: its update history. */
  z.strictObject({
    op: z.literal('machine-history'),
    machine: machineName,
    limit: z.number().int().min(1).max(MAX_MACHINE_HISTORY),
  }),
  /** Round trips from the coordinator to a machine over its control stream. */
  z.strictObject({
    op: z.literal('ping'),
    machine: machineName,
    count: z.number().int().min(1).max(MAX_PING_COUNT),
  }),
  /** A machine's own diagnosis of its network, asked over its control stream. */
  z.strictObject({ op: z.literal('doctor'), machine: machineName }),
  /**
   * A manifest signed for all its targets, released wave by wave under `policy`;
   * `rollbacks` are signed manifests of the targets' previous generations, held
   * unused until a halt with onFailure 'rollback'.
   */
  z.strictObject({ op: z.literal('submit-waves'), envelope: envelopeBytes, ...submitWavesFields.shape }),
  /** Rollouts in waves the caller's certificate covers, newest first. */
  z.strictObject({ op: z.literal('rollout-list'), limit: z.number().int().min(1).max(1000) }),
  z.strictObject({ op: z.literal('rollout-show'), rolloutId: idHex }),
  /** The targets of one desired manifest per machine, for signing rollback manifests. */
  z.strictObject({ op: z.literal('desired-manifests'), machines: z.array(machineName).max(100_000) }),
  z.strictObject({
    op: z.literal('rollout-control'),
    rolloutId: idHex,
    action: z.enum(['pause', 'resume', 'abort']),
  }),
  z.strictObject({ op: z.literal('set-tags'), records: z.array(envelopeBytes).min(1).max(1000) }),
  z.strictObject({ op: z.literal('tag-versions'), machines: z.array(machineName).max(100_000) }),
  /**
   * A fleet file carried out, stored all or none: tag records (as set-tags), then
   * rollouts in order, each one manifest (as submit-manifest) or, with `waves`, a
   * release and its held rollbacks (as submit-waves). The request's size bounds it.
   */
  z.strictObject({
    op: z.literal('apply'),
    records: z.array(envelopeBytes).max(1000),
    rollouts: z
      .array(z.strictObject({ envelope: envelopeBytes, waves: submitWavesFields.nullable() }))
      .max(64),
  }),
  z.strictObject({
    op: z.literal('upload-blob'),
    sha256: sha256Hex,
    size: byteCount,
  }),
])
export type AdminOp = z.infer<typeof adminOpSchema>

export const adminRequestSchema = z.strictObject({
  v: z.literal(1),
  /** Unique per request; the coordinator rejects a repeat, so a captured request cannot be replayed. */
  nonce: idHex,
  issuedAt: timestampMs,
  body: adminOpSchema,
})
export type AdminRequest = z.infer<typeof adminRequestSchema>

export const adminResponseSchema = okOrError({ result: z.unknown() })
export type AdminResponse = z.infer<typeof adminResponseSchema>

// ---------------------------------------------------------------- blob protocol

export const blobRequestSchema = z.strictObject({
  t: z.literal('get'),
  sha256: sha256Hex,
  /** Resume point: the agent sends how many bytes it already has. */
  offset: byteCount,
})
export type BlobRequest = z.infer<typeof blobRequestSchema>

export const blobResponseSchema = okOrError({ size: byteCount })
export type BlobResponse = z.infer<typeof blobResponseSchema>
