/**
 * Schemas of the results the coordinator returns to admin requests. Both sides
 * use them: the coordinator validates what it sends, the CLI what it receives.
 */
import { z } from 'zod'
import { bytes, machineName, tagName } from '../keys/index.ts'
import { setTagsResult } from './machine-tags.ts'
import {
  connectionPathSchema,
  errorInfo,
  idHex,
  MAX_AUDIT_READS,
  MAX_MACHINE_HISTORY,
  MAX_REPORT_LOG,
  storePath,
  UPDATE_STATES,
} from './messages.ts'
import { updateLogText } from './update-log.ts'
import { ROLLOUT_STATES, wavePolicySchema } from './wave-policy.ts'

const nullableText = z.string().max(256).nullable()
const count = z.number().int().nonnegative()

/**
 * The transport under an agent's connection to the coordinator, beside its
 * path; for a relayed one, the transport of the hop to the relay, the one the
 * coordinator sees.
 */
export const CONNECTION_TRANSPORTS = ['tcp', 'quic'] as const
export type ConnectionTransport = (typeof CONNECTION_TRANSPORTS)[number]
export const connectionTransportSchema = z.enum(CONNECTION_TRANSPORTS)

export const fleetInfoResult = z.strictObject({
  fleetId: z.string(),
  fleetRoot: z.string(),
  coordinator: z.string(),
  maxSequence: count,
  machines: count,
  online: count,
  /** The coordinator process's memory, bytes: resident set and live JS heap. */
  memory: z.strictObject({ rss: count, heapUsed: count }),
})
export type FleetInfo = z.infer<typeof fleetInfoResult>

export const machineViewSchema = z.strictObject({
  name: machineName,
  peerId: z.string().max(128),
  tags: z.array(tagName),
  online: z.boolean(),
  path: connectionPathSchema.nullable(),
  /**
   * The transport of the last connection `path` describes; null when not recorded (last connected to
   * an older coordinator), absent in views from a coordinator older than this.
   */
  transport: connectionTransportSchema.nullable().optional(),
  enrolledAt: count,
  lastSeen: count.nullable(),
  state: z.enum(UPDATE_STATES).nullable(),
  currentGeneration: nullableText,
  desiredGeneration: nullableText,
  manifestId: idHex.nullable(),
  rolloutId: idHex.nullable(),
  desiredManifestId: idHex.nullable(),
  desiredRolloutId: idHex.nullable(),
  progress: z.strictObject({ done: count, total: count }).nullable(),
  error: errorInfo.nullable(),
  /** The installed update takes effect at the next boot (NixOS `boot` mode) */
  rebootRequired: z.boolean(),
  reportedAt: count.nullable(),
  /** The `software` of the agent's latest hello (e.g. "fleetmesh/0.1.0"); null before its first connection. */
  agentVersion: nullableText,
})
export type MachineView = z.infer<typeof machineViewSchema>

export const machinesResult = z.array(machineViewSchema).max(100_000)

export const submitResult = z.strictObject({
  manifestId: idHex,
  rolloutId: idHex,
  sequence: count,
  machines: z.array(machineName),
  unknown: z.array(machineName),
})
export type SubmitResult = z.infer<typeof submitResult>

/** `apply` answers with the tag changes (as set-tags) and each rollout as submitted, in the request's order. */
export const applyResult = z.strictObject({
  tags: setTagsResult.shape.changed,
  rollouts: z.array(submitResult).max(64),
})
export type ApplyResult = z.infer<typeof applyResult>

export const uploadResult = z.strictObject({ offset: count.optional(), complete: z.boolean() })

export const ROLLOUT_MACHINE_OUTCOMES = [
  'waiting',
  'pending',
  'done',
  'failed',
  'skipped',
  'withheld',
] as const
export type RolloutMachineOutcome = (typeof ROLLOUT_MACHINE_OUTCOMES)[number]

/** Where a rollout in waves stands (coordinator/rollout-engine.ts). */
export const rolloutViewSchema = z.strictObject({
  rolloutId: idHex,
  manifestId: idHex,
  generation: z.string().max(256),
  state: z.enum(ROLLOUT_STATES),
  /** Why it halted, was aborted or paused: set by the engine or the admin who did it. */
  reason: nullableText,
  policy: wavePolicySchema,
  /** Index (from 0) of the wave that started last. */
  wave: count,
  waves: count,
  createdAt: count,
  waveStartedAt: count,
  /** When the current wave settled healthy (its soak started), else null. */
  soakStartedAt: count.nullable(),
  /** Whether rollback manifests were sent on halt. */
  rolledBack: z.boolean(),
  counts: z.record(z.enum(ROLLOUT_MACHINE_OUTCOMES), count),
  machines: z
    .array(z.strictObject({ name: machineName, wave: count, outcome: z.enum(ROLLOUT_MACHINE_OUTCOMES) }))
    .max(100_000),
})
export type RolloutView = z.infer<typeof rolloutViewSchema>

export const watchEvent = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('snapshot'), machines: machinesResult }),
  z.strictObject({ type: z.enum(['status', 'online', 'offline', 'enrolled']), machine: machineViewSchema }),
  z.strictObject({
    type: z.literal('manifest'),
    manifestId: idHex,
    rolloutId: idHex,
    machines: z.array(machineName),
  }),
  /**
   * Where the watched rollout in waves stands: sent before the snapshot, then on
   * each change (a wave starts or settles, its soak starts, it halts, pauses,
   * resumes, ends, or a machine's outcome changes). Only on a watch of a rollout
   * in waves whose every machine the admin's certificate covers.
   */
  z.strictObject({ type: z.literal('rollout'), rollout: rolloutViewSchema }),
])
export type WatchEvent = z.infer<typeof watchEvent>

/**
 * Output of a machine's running update as its agent sends it (protocol/update-log.ts):
 * `text` at byte `offset` of the update's live log. Only on a watch of one machine.
 */
export const updateLogEvent = z.strictObject({
  type: z.literal('update-log'),
  machine: machineName,
  manifestId: idHex,
  offset: count,
  text: updateLogText,
})
export type UpdateLogEvent = z.infer<typeof updateLogEvent>

/** What a watch of one machine sends: the watch events about it, and its running updates' output. */
export const machineWatchEvent = z.union([watchEvent, updateLogEvent])
export type MachineWatchEvent = z.infer<typeof machineWatchEvent>

/**
 * The longest detail an audit record carries. The store cuts longer ones as it
 * appends them, whoever writes them: a record that fails this schema would make
 * every audit page holding it unreadable, and a chained record cannot be edited.
 */
export const MAX_AUDIT_RECORD_DETAIL = 4096

export const auditRecordSchema = z.strictObject({
  index: count,
  at: count,
  peerId: z.string().max(128),
  actor: z.string().max(64).nullable(),
  action: z.string().max(64),
  outcome: z.enum(['ok', 'denied', 'error']),
  detail: z.string().max(MAX_AUDIT_RECORD_DETAIL),
  request: bytes().nullable(),
  prevHash: bytes(32),
  hash: bytes(32),
  sig: bytes(64),
})
/** A page of the audit log: as many records as fit one frame, at most the `limit` asked for; empty past the end. */
export const auditResult = z.array(auditRecordSchema).max(10_000)

/**
 * Successful reads (requests that need only the read capability) are not in the
 * hash-chained log: each admin's reads of one op within one window are counted
 * in one summary, kept in a bounded table (see coordinator/audit-trail.ts).
 */
export const auditReadSchema = z.strictObject({
  /** base64url admin public key. */
  actor: z.string().max(64),
  /** The peer of the latest of these reads. */
  peerId: z.string().max(128),
  action: z.string().max(64),
  /** Start of the window these reads fall in (ms since the epoch). */
  windowStart: count,
  firstAt: count,
  lastAt: count,
  count: count,
  /** The latest read's detail (a rollout id, a machine name), shortened. */
  detail: z.string().max(256),
})
export type AuditRead = z.infer<typeof auditReadSchema>

/** The newest read summaries first. */
export const auditReadsResult = z.array(auditReadSchema).max(MAX_AUDIT_READS)

export const revokeResult = z.strictObject({ revoked: z.string() })

export const nixMissingResult = z.strictObject({ missing: z.array(storePath).max(2000) })
export type NixMissing = z.infer<typeof nixMissingResult>

export const nixPutResult = z.strictObject({ stored: count, alreadyHad: count })
export type NixPut = z.infer<typeof nixPutResult>

export const nixClosureResult = z.strictObject({
  /** Paths of the closure the cache holds */
  paths: count,
  /** Their total NAR size in bytes */
  narSize: count,
  /** Referenced paths the cache lacks; the closure is complete when empty */
  missing: z.array(storePath).max(50_000),
})
export type NixClosure = z.infer<typeof nixClosureResult>

export const machineLogResult = z.strictObject({
  machine: machineName,
  state: z.enum(UPDATE_STATES).nullable(),
  manifestId: idHex.nullable(),
  generation: nullableText,
  error: errorInfo.nullable(),
  log: z.string().max(MAX_REPORT_LOG).nullable(),
  rebootRequired: z.boolean(),
  reportedAt: count.nullable(),
})
export type MachineLog = z.infer<typeof machineLogResult>

/** One report of a machine's update history (`machine-history`), without its log. */
export const machineHistoryEntry = z.strictObject({
  seq: count,
  state: z.enum(UPDATE_STATES),
  currentGeneration: nullableText,
  desiredGeneration: nullableText,
  rolloutId: idHex.nullable(),
  progress: z.strictObject({ done: count, total: count }).nullable(),
  error: errorInfo.nullable(),
  /** The agent's clock when it reported, and the coordinator's when it stored the report. */
  reportedAt: count,
  receivedAt: count,
})
export type MachineHistoryEntry = z.infer<typeof machineHistoryEntry>
export const machineHistoryResult = z.array(machineHistoryEntry).max(MAX_MACHINE_HISTORY)

export const rolloutListResult = z.array(rolloutViewSchema).max(1000)

/** Each machine's desired manifest envelope (as signed), for the machines the caller covers that have one. */
export const desiredManifestsResult = z
  .array(z.strictObject({ machine: machineName, envelope: bytes() }))
  .max(100_000)
