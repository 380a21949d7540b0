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
import type { AuditEntry, AuditRecord, ConnectionPath, StatusReport, Targets } from '../protocol/index.ts'

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

export type { AuditEntry, AuditOutcome, AuditRecord } from '../protocol/index.ts'

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
}

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
  | 'unknown-machine'
  | 'fleet-mismatch'

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

export interface FleetStore {
  getFleet(): Promise<FleetInfo | undefined>
  /** Idempotent for the same fleet; throws StoreConflictError('fleet-mismatch') if another fleet is stored. */
  initFleet(fleetId: string, fleetRoot: string): Promise<void>

  /**
   * Atomically: the token nonce must be unused ('token-used'), the name free or
   * already held by this peer ('name-taken'), the peer not enrolled under another
   * name ('peer-taken'). Re-enrolling the same peer under its name with a fresh
   * token replaces tags and facts. Marks the nonce used.
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
  /** Newest (highest sequence) first. */
  listManifests(limit: number): Promise<ManifestRecord[]>

  /**
   * Resolves only once the report is durably committed, so the caller may
   * acknowledge it. A (machine, seq) already stored is 'duplicate' and changes
   * nothing; the latest status moves only forward in seq, history keeps all.
   * Throws StoreConflictError('unknown-machine') for a machine not enrolled.
   */
  recordStatus(record: StatusRecord): Promise<'stored' | 'duplicate'>
  /**
   * Group commit: records many reports in one durable transaction (one fsync),
   * each with its own outcome; a report for an unknown machine gets a
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
   * The report an admin wants to read a machine's update log from: the newest
   * report of its latest update (manifest) that carries a log or a reboot flag,
   * else its latest report. Later reports of an update need not repeat the log,
   * and an older update's log must not stand in for a newer one's.
   */
  latestLogReport(machine: string): Promise<StatusRecord | undefined>

  /** Chains and signs the entry in one transaction; see audit.ts for the hash. */
  appendAudit(entry: AuditEntry, sign: AuditSigner): Promise<AuditRecord>
  /** Records with index > afterIndex, ascending. */
  listAudit(afterIndex: number, limit: number): Promise<AuditRecord[]>

  /** Idempotent: a serial revoked twice keeps its first reason and time. */
  revoke(serial: string, reason: string, at: number): Promise<void>
  revokedSerials(): Promise<Set<string>>

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

  /** Idempotent. */
  close(): Promise<void>
}
