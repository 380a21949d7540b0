/**
 * @packageDocumentation
 *
 * The coordinator's state store: enrolled machines, submitted manifests and the
 * desired state they fan out to, agents' status reports, the audit log,
 * revocations, replay nonces, and the narinfos of the Nix binary cache.
 *
 * The interface is deliberately narrow and async so that a PostgreSQL store
 * shared by several coordinators can implement it later; the embedded default is
 * SQLite (sqlite-store.ts). Every rule that needs several reads and writes to
 * agree (enrollment, manifest sequence, audit chaining) is one method, so each
 * implementation can make it one transaction and no caller can interleave
 * between the check and the write.
 *
 * @example
 *
 * ```ts
 * import { openSqliteStore } from './sqlite-store.ts'
 *
 * const store = await openSqliteStore('/var/lib/fleetmesh/coordinator.db')
 * await store.initFleet('acme', rootKey.toString())
 * await store.enrollMachine({ name: 'edge-1', peerId, publicKey, tags: ['lab'], facts: {}, nonce, at: Date.now() })
 * if ((await store.recordStatus(status)) === 'stored') {
 *   // only now acknowledge the report to the agent: it is on disk
 * }
 * await store.close()
 * ```
 */
import { CodedError } from '../lib/index.ts'
import type {
  AuditEntry,
  AuditRead,
  AuditRecord,
  ConnectionPath,
  ConnectionTransport,
  ListState,
  RevocationHead,
  RevocationView,
  StatusReport,
  Targets,
} from '../protocol/index.ts'
import type { ClusterChannel } from './cluster-channel.ts'
import type { MachineTagStore } from './sqlite-tags.ts'
import type { BundleStore } from './store-bundle.ts'
import type { RolloutStore } from './store-rollouts.ts'

export interface MachineRecord {
  name: string
  peerId: string
  /** base64url Ed25519 public key, as PublicKey.toString(). */
  publicKey: string
  tags: string[]
  facts: Record<string, string>
  /** Time of the latest (re-)enrollment. */
  enrolledAt: number
  lastSeen: number | null
  path: ConnectionPath | null
  /** The transport under that connection; null before the first one recorded with it. */
  transport: ConnectionTransport | null
  /** The `software` of the agent's latest hello; null before its first connection. */
  agentVersion: string | null
}

export interface ManifestRecord {
  id: string
  sequence: number
  rolloutId: string
  generation: string
  targets: Targets
  /** The signed envelope exactly as submitted: agents verify these bytes, so they are never re-encoded. */
  envelope: Uint8Array
  /** Public key (base64url) of the admin who signed the manifest. */
  submittedBy: string
  submittedAt: number
  expiresAt: number
  /** Target machines as resolved when the manifest was submitted. */
  machines: string[]
}

/** What addManifest takes: the target machines are passed separately, already resolved. */
export type NewManifest = Omit<ManifestRecord, 'machines'>

export interface StatusRecord {
  /** Must equal report.machine; kept as a column so reports can be found without decoding them. */
  machine: string
  /** Must equal report.seq. */
  seq: number
  report: StatusReport
  /** The agent's signed envelope, stored unchanged so the report stays verifiable later. */
  envelope: Uint8Array
  receivedAt: number
}

export type { AuditEntry, AuditOutcome, AuditRead, AuditRecord } from '../protocol/index.ts'

/** One successful read, counted into the summary of its actor, action and window. */
export interface AuditReadEntry {
  actor: string
  peerId: string
  action: string
  detail: string
  at: number
  /** The start of the window `at` falls in; the caller picks the window length. */
  windowStart: number
}

/** Read summaries kept; beyond this the least recently updated are dropped. */
export const MAX_AUDIT_READ_ROWS = 20_000

/** One store path the coordinator's Nix binary cache holds; its NAR is the blob named `narSha256`. */
export interface NarInfoRecord {
  /** The store path's 32-character hash part: the narinfo's name. */
  hash: string
  storePath: string
  /** The narinfo text exactly as served: normalised by the coordinator, signatures as pushed. */
  narinfo: string
  /** Lowercase hex SHA-256 of the uncompressed NAR, which is also its blob name. */
  narSha256: string
  narSize: number
  /** Store path basenames (`<hash>-<name>`), as in the narinfo. */
  references: string[]
  /** When the path was first stored. */
  addedAt: number
  /**
   * When an admin last pushed or asked about the path. Retention's grace period
   * runs from here, so a closure pushed for a deploy not yet submitted is kept.
   */
  touchedAt: number
}

/** What putNarInfos takes; the hash is derived from the store path. */
export type NewNarInfo = Omit<NarInfoRecord, 'hash' | 'addedAt' | 'touchedAt'>

/** The part of a store path's closure the cache knows about. */
export interface NarInfoClosure {
  /** Narinfos of the closure's paths the cache holds, the root's first. */
  held: NarInfoRecord[]
  /** Closure paths (the root, or referenced ones) with no narinfo, sorted. */
  missing: string[]
  /** The walk stopped at its limit: `held` and `missing` are incomplete. */
  overflow: boolean
}

/** What collectNarInfos deleted. */
export interface NarInfoCollection {
  /** Store paths whose narinfos were deleted. */
  deleted: string[]
  /** NAR blobs (hex SHA-256) of deleted narinfos that no remaining narinfo uses. */
  orphanedNars: string[]
}

/** Signs an audit record's hash; called inside the append transaction, so it must be synchronous. */
export type AuditSigner = (hash: Uint8Array) => Uint8Array

/** Requests arrive in frames no larger than this, so a bigger one means a caller bug. */
export const MAX_AUDIT_REQUEST_BYTES = 256 * 1024

export interface EnrollMachineInput {
  name: string
  peerId: string
  publicKey: string
  tags: readonly string[]
  facts: Readonly<Record<string, string>>
  /** The enrollment token's nonce; each token enrolls once. */
  nonce: string
  at: number
}

export interface TouchInput {
  lastSeen: number
  path: ConnectionPath | null
  /** The transport under the connection `path` describes; absent: not known (stored as null). */
  transport?: ConnectionTransport | null
  /** The agent's hello `software`, given when it connects; kept as it is when absent. */
  agentVersion?: string
}

/** One entry of the signed revocation list, as stored. */
export interface StoredRevocation {
  seq: number
  /** Hash of the signed entry (protocol/revocation.ts). */
  hash: string
  serial: string
  at: number
  /** The signed envelope exactly as the admin sent it. */
  envelope: Uint8Array
}

export interface NewRevocation extends StoredRevocation {
  /** The hash of the entry it follows (ZERO_HASH for the first). */
  prev: string
  reason: string
}

/**
 * The signed revocation list. Entries are checked (protocol/revocation.ts) before
 * they are appended; the store keeps them in order and never changes one.
 */
export interface RevocationLog {
  /**
   * In one transaction: appends the entry if it extends the stored head (its seq
   * follows the head's and `prev` is the head's hash), else throws
   * StoreConflictError('revocation-conflict'); and revokes its serial in the
   * coordinator's own list (revokedSerials).
   */
  append(entry: NewRevocation): Promise<void>
  /** The newest entry's seq and hash (seq 0 and ZERO_HASH for the empty list). */
  head(): Promise<RevocationHead>
  /**
   * Entries with seq > after, ascending: at most `limit`, and past the first only
   * while their envelopes add up to no more than `maxBytes`.
   */
  list(after: number, limit: number, maxBytes?: number): Promise<StoredRevocation[]>
  /** The list's head, the time of its newest entry, its serials and every entry's hash (no envelopes). */
  state(): Promise<RevocationView & ListState>
}

// Rollouts in waves: their records and store (store-rollouts.ts), part of this interface.
export type {
  DesiredChange,
  NewRollout,
  RolloutChange,
  RolloutRecord,
  RolloutStore,
} from './store-rollouts.ts'

export interface FleetInfo {
  fleetId: string
  /** base64url fleet root public key. */
  fleetRoot: string
}

export type StoreConflictCode =
  | 'token-used'
  | 'name-taken'
  | 'peer-taken'
  | 'stale-sequence'
  | 'sequence-jump'
  | 'unknown-machine'
  | 'fleet-mismatch'
  /** A status report under a (machine, seq) already stored with other content: the agent's numbering went back. */
  | 'seq-reused'
  /** A revocation entry that does not extend the stored list's head (another was added first). */
  | 'revocation-conflict'

/** A write refused because it contradicts what is stored; nothing was changed. */
export class StoreConflictError extends CodedError<StoreConflictCode> {
  override name = 'StoreConflictError'
}

/** The stored schema is one this build cannot use (written by a newer fleetmesh). */
export class StoreSchemaError extends Error {
  override name = 'StoreSchemaError'
}

/** A value exceeds a bound the store enforces (a caller bug: inputs are bounded earlier). */
export class StoreLimitError extends Error {
  override name = 'StoreLimitError'
}

export interface FleetStore extends BundleStore {
  getFleet(): Promise<FleetInfo | undefined>
  /** Idempotent for the same fleet; throws StoreConflictError('fleet-mismatch') if another fleet is stored. */
  initFleet(fleetId: string, fleetRoot: string): Promise<void>

  /**
   * Atomically: the token nonce must be unused ('token-used'), the name free or
   * already held by this peer ('name-taken'), the peer not enrolled under another
   * name ('peer-taken'). Re-enrolling the same peer under its name with a fresh
   * token replaces tags and facts. Marks the nonce used. A machine without a
   * desired state gets the newest unexpired manifest that targets its name or a
   * tag (but not the release of a rollout in waves that is not done), and joins
   * that rollout: a rollout to a tag reaches later members.
   */
  enrollMachine(input: EnrollMachineInput): Promise<MachineRecord>
  getMachine(name: string): Promise<MachineRecord | undefined>
  getMachineByPeer(peerId: string): Promise<MachineRecord | undefined>
  /** Sorted by name. */
  listMachines(): Promise<MachineRecord[]>
  /** Throws StoreConflictError('unknown-machine') if the machine is not enrolled. */
  touchMachine(name: string, input: TouchInput): Promise<void>

  /** Highest manifest sequence stored, 0 when none. */
  maxSequence(): Promise<number>
  /**
   * Atomically: record.sequence must exceed maxSequence() ('stale-sequence') and
   * every machine must be enrolled ('unknown-machine'); stores the manifest and
   * makes it the desired state of each machine.
   */
  addManifest(record: NewManifest, machines: readonly string[]): Promise<ManifestRecord>
  getManifest(id: string): Promise<ManifestRecord | undefined>
  getDesired(machine: string): Promise<ManifestRecord | undefined>
  /** getDesired of many machines in one read (sqlite-desired.ts); those without one are absent. */
  getDesiredMany(machines: readonly string[]): Promise<Map<string, ManifestRecord>>
  /** Newest (highest sequence) first. */
  listManifests(limit: number): Promise<ManifestRecord[]>
  /** The manifests of one rollout (one, or one per machine of a --nix-map), oldest first. */
  rolloutManifests(rolloutId: string): Promise<ManifestRecord[]>

  /**
   * Resolves only once the report is durably committed, so the caller may
   * acknowledge it. A (machine, seq) already stored is 'duplicate' and changes
   * nothing; the latest status moves only forward in seq, history keeps all.
   * Throws StoreConflictError('unknown-machine') for a machine not enrolled.
   */
  recordStatus(record: StatusRecord): Promise<'stored' | 'duplicate'>
  /**
   * Group commit: records many reports in one durable transaction (one fsync),
   * each with its own outcome; a report for an unknown machine, or one reusing a
   * stored seq with other content ('seq-reused', not a duplicate), gets a
   * StoreConflictError in its slot instead of failing the others.
   */
  recordStatuses(records: readonly StatusRecord[]): Promise<('stored' | 'duplicate' | StoreConflictError)[]>
  /** Highest seq stored for the machine, 0 when none. */
  lastStatusSeq(machine: string): Promise<number>
  latestStatus(machine: string): Promise<StatusRecord | undefined>
  latestStatuses(): Promise<Map<string, StatusRecord>>
  /** Newest (highest seq) first. */
  statusHistory(machine: string, limit: number): Promise<StatusRecord[]>
  /**
   * The machine's newest report about the rollout, among its most recent reports:
   * what the rollout did there even when later reports are about something else
   * (an agent's first report after a restart repeats its own last update).
   */
  latestRolloutReport(machine: string, rolloutId: string): Promise<StatusRecord | undefined>

  /**
   * The report an admin wants to read a machine's update log from: the newest
   * report of its latest update (manifest) that carries a log or a reboot flag,
   * else its latest report. Later reports of an update need not repeat the log,
   * and an older update's log must not stand in for a newer one's.
   */
  latestLogReport(machine: string): Promise<StatusRecord | undefined>

  /** Chains and signs the entry in one transaction; see audit.ts for the hash. */
  appendAudit(entry: AuditEntry, sign: AuditSigner): Promise<AuditRecord>
  /**
   * Records with index > afterIndex, ascending: at most `limit`, and past the
   * first only while their auditRecordBytes add up to no more than `maxBytes`,
   * so a page fits one frame however large single records are.
   */
  listAudit(afterIndex: number, limit: number, maxBytes?: number): Promise<AuditRecord[]>
  /**
   * Counts a successful read into its summary (one per actor, action and
   * window), outside the hash chain; keeps at most MAX_AUDIT_READ_ROWS summaries.
   */
  recordRead(entry: AuditReadEntry): Promise<void>
  /** Read summaries, most recently updated first. */
  listReads(limit: number): Promise<AuditRead[]>

  /** Idempotent: a serial revoked twice keeps its first reason and time. */
  revoke(serial: string, reason: string, at: number): Promise<void>
  /** Every serial the coordinator refuses: those revoked by the signed list and the older unsigned ones. */
  revokedSerials(): Promise<Set<string>>
  /** The signed revocation list (protocol/revocation.ts), which agents hold too. */
  readonly revocationLog: RevocationLog
  /** Rollouts in waves. */
  readonly rollouts: RolloutStore
  /** Signed tag records of enrolled machines. */
  readonly machineTags: MachineTagStore

  /** false if the nonce was seen before (a replay). */
  rememberNonce(nonce: string, expiresAt: number): Promise<boolean>
  /** Forgets nonces whose expiry is at or before now. */
  pruneNonces(now: number): Promise<void>

  /**
   * Stores narinfos in one transaction. A path whose stored narinfo has exactly
   * this text is 'already-had' (and touched); any other text replaces what is
   * stored (keeping addedAt). Every path's touchedAt becomes `at`.
   */
  putNarInfos(narinfos: readonly NewNarInfo[], at: number): Promise<('stored' | 'already-had')[]>
  /** The narinfos held for these store path hashes, in no particular order. */
  getNarInfos(hashes: readonly string[]): Promise<NarInfoRecord[]>
  /** Sets touchedAt of the held ones among these hashes to `at`. */
  touchNarInfos(hashes: readonly string[], at: number): Promise<void>
  /**
   * Walks references from `storePath` through the held narinfos: every path
   * reached is held or missing. Stops after `maxPaths` paths (overflow).
   */
  narInfoClosure(storePath: string, maxPaths: number): Promise<NarInfoClosure>
  /**
   * Retention, in one transaction so a concurrent push cannot slip between the
   * check and the delete: deletes every narinfo touched before `before` that is
   * outside the closures of `roots` (store paths), and reports the NAR blobs
   * no remaining narinfo uses. The blobs themselves are the caller's to delete.
   */
  collectNarInfos(roots: readonly string[], before: number): Promise<NarInfoCollection>

  /** What coordinators sharing this store tell each other (cluster-channel.ts); absent when one coordinator has it. */
  readonly cluster?: ClusterChannel

  /** Idempotent. */
  close(): Promise<void>
}
