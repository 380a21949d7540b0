/**
 * The admin CLI's connection to the coordinator: a short-lived libp2p host with
 * the admin's own key, one stream per signed request, and one typed method per
 * admin request. The blob upload, which streams data after its request, is in
 * upload.ts.
 */

import { randomBytes } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { z } from 'zod'
import { DOMAINS } from '../keys/index.ts'
import { batches, CodedError, describeIssues } from '../lib/index.ts'
import { createHost, type FleetHost, openStream, parseAddress, stopHost } from '../net/index.ts'
import {
  type AdminOp,
  type AdminResponse,
  type ApplyResult,
  type AuditRead,
  type AuditRecord,
  adminRequestSchema,
  adminResponseSchema,
  applyResult,
  auditReadsResult,
  auditResult,
  type DoctorResult,
  decodeMessage,
  desiredManifestsResult,
  doctorResult,
  type FleetInfo,
  FramedStream,
  fleetInfoResult,
  MAX_REVOCATIONS_PER_FRAME,
  type MachineHistoryEntry,
  type MachineLog,
  type MachineView,
  type MachineWatchEvent,
  machineHistoryResult,
  machineLogResult,
  machinesResult,
  machineWatchEvent,
  type NixClosure,
  type NixPut,
  nixClosureResult,
  nixMissingResult,
  nixPutResult,
  type PingResult,
  PROTOCOLS,
  pingResult,
  RevocationChain,
  RevocationError,
  type RevocationsPage,
  type RolloutView,
  revocationsResult,
  revokeResult,
  revokeSignedResult,
  rolloutListResult,
  rolloutViewSchema,
  type SetTagsResult,
  type SubmitResult,
  sealEnvelope,
  setTagsResult,
  submitResult,
  type TagVersions,
  tagVersionsResult,
  type WatchEvent,
  type WavePolicy,
  watchEvent,
} from '../protocol/index.ts'
import { type AdminHome, fleetAddrSource } from './home.ts'

/** Largest frame either way: a machines list or audit page can be big; upload chunks are far smaller. */
const MAX_FRAME_BYTES = 64 * 1024 * 1024
const REQUEST_TIMEOUT_MS = 30_000

/** Store paths per `nix-missing` request: the protocol's cap, and a byte budget for long path names. */
export const NIX_MISSING_BATCH = { items: 2000, bytes: 128 * 1024 }
/**
 * Narinfos per `nix-put` request. The whole request must fit one 256 KiB envelope
 * with the admin's certificate chain, so the texts stay well below it.
 */
export const NIX_PUT_BATCH = { items: 512, bytes: 128 * 1024 }

export class AdminRequestError extends CodedError<string> {
  override name = 'AdminRequestError'
}

/** A live watch of one machine (AdminClient.watchMachine): its events and its running updates' output. */
export interface MachineWatch {
  /** The next event; rejects with a TimeoutError when none arrives within `timeoutMs`. */
  next(timeoutMs: number): Promise<MachineWatchEvent>
  close(): void
}

/** A live `watch`: events in the order the coordinator sends them, until closed. */
export interface AdminWatch {
  /** The next event; rejects with a TimeoutError when none arrives within `timeoutMs`. */
  next(timeoutMs: number): Promise<WatchEvent>
  close(): void
}

export class AdminClient {
  readonly host: FleetHost
  readonly home: AdminHome
  #coordinator: ReturnType<typeof peerIdFromString>
  /** Where requests go when the current coordinator is unreachable: the other listed ones (home.coordinators). */
  #fallbacks: ReturnType<typeof peerIdFromString>[] = []

  private constructor(host: FleetHost, home: AdminHome) {
    this.host = host
    this.home = home
    this.#coordinator = peerIdFromString(home.fleet.coordinator.peerId)
  }

  /** Parses every address before the host starts, and stops the host if anything after its start fails. */
  static async connect(home: AdminHome, addrsOverride: string[] = []): Promise<AdminClient> {
    const multiaddrs =
      addrsOverride.length > 0
        ? addrsOverride.map((a) => parseAddress(a, '--coordinator'))
        : home.fleet.coordinator.addrs.map((a, i) => parseAddress(a, fleetAddrSource(home.dir, i)))
    const host = await createHost({ role: 'admin', privateKey: home.key.toLibp2p(), listen: [] })
    try {
      const client = new AdminClient(host, home)
      await host.peerStore.merge(client.#coordinator, { multiaddrs })
      // --coordinator names one coordinator to talk to; otherwise any coordinator of the fleet will do
      for (const other of addrsOverride.length > 0 ? [] : home.coordinators.slice(1)) {
        const peer = peerIdFromString(other.peerId)
        await host.peerStore.merge(peer, {
          multiaddrs: other.addrs.map((a) => parseAddress(a, 'coordinators.list')),
        })
        client.#fallbacks.push(peer)
      }
      return client
    } catch (err) {
      await stopHost(host)
      throw err
    }
  }

  async close(): Promise<void> {
    await stopHost(this.host)
  }

  // ---------------------------------------------------------------- requests

  fleetInfo(): Promise<FleetInfo> {
    return this.#request({ op: 'fleet-info' }, fleetInfoResult)
  }

  /** The machines this admin's certificate covers. */
  machines(): Promise<MachineView[]> {
    return this.#request({ op: 'machines' }, machinesResult)
  }

  /** Submits a sealed manifest; refused with code "stale-sequence" when another has taken its sequence. */
  submitManifest(envelope: Uint8Array): Promise<SubmitResult> {
    return this.#request({ op: 'submit-manifest', envelope }, submitResult)
  }

  /** Submits a release to roll out in waves, with its held rollback manifests (coordinator/admin-rollouts.ts). */
  submitWaves(envelope: Uint8Array, policy: WavePolicy, rollbacks: Uint8Array[]): Promise<SubmitResult> {
    return this.#request({ op: 'submit-waves', envelope, policy, rollbacks }, submitResult)
  }

  rolloutList(limit = 100): Promise<RolloutView[]> {
    return this.#request({ op: 'rollout-list', limit }, rolloutListResult)
  }

  rolloutShow(rolloutId: string): Promise<RolloutView> {
    return this.#request({ op: 'rollout-show', rolloutId }, rolloutViewSchema)
  }

  rolloutControl(rolloutId: string, action: 'pause' | 'resume' | 'abort'): Promise<RolloutView> {
    return this.#request({ op: 'rollout-control', rolloutId, action }, rolloutViewSchema)
  }

  /** The signed desired manifest of each of these machines that has one (and the caller covers). */
  desiredManifests(machines: string[]): Promise<{ machine: string; envelope: Uint8Array }[]> {
    return this.#request({ op: 'desired-manifests', machines }, desiredManifestsResult)
  }

  /**
   * One page of the audit log: records after index `after`, at most `limit` and
   * no more than fit one frame, so a short page does not mean the end: an empty one does.
   */
  audit(after: number, limit: number): Promise<AuditRecord[]> {
    return this.#request({ op: 'audit', after, limit }, auditResult)
  }

  /** The newest summaries of successful reads, which are counted apart from the chained log. */
  auditReads(limit: number): Promise<AuditRead[]> {
    return this.#request({ op: 'audit-reads', limit }, auditReadsResult)
  }

  revoke(serial: string, reason: string): Promise<{ revoked: string }> {
    return this.#request({ op: 'revoke', serial, reason }, revokeResult)
  }

  /** Appends a signed entry to the revocation list; refused with "revocation-conflict" when another came first. */
  revokeSigned(
    serial: string,
    reason: string,
    entry: Uint8Array,
  ): Promise<z.output<typeof revokeSignedResult>> {
    return this.#request({ op: 'revoke', serial, reason, entry }, revokeSignedResult)
  }

  /**
   * Signed tag records (protocol/machine-tags.ts), stored all or none; refused with
   * the rule's code (e.g. "stale-version" when another change came first).
   */
  setTags(records: Uint8Array[]): Promise<SetTagsResult> {
    return this.#request({ op: 'set-tags', records }, setTagsResult)
  }

  /**
   * A fleet file's tag records and rollouts (each one manifest, or with `waves` a release
   * and its rollbacks), which the coordinator stores all or none (coordinator/admin-apply.ts).
   */
  applyFleet(
    records: Uint8Array[],
    rollouts: { envelope: Uint8Array; waves: { policy: WavePolicy; rollbacks: Uint8Array[] } | null }[],
  ): Promise<ApplyResult> {
    return this.#request({ op: 'apply', records, rollouts }, applyResult)
  }

  /** The last accepted tag record version of each named machine this admin covers (0: none since enrollment). */
  tagVersions(machines: string[]): Promise<TagVersions> {
    return this.#request({ op: 'tag-versions', machines }, tagVersionsResult)
  }

  /** One page of the signed revocation list: its head, and entries after `after`. */
  revocationsPage(after: number, limit = MAX_REVOCATIONS_PER_FRAME): Promise<RevocationsPage> {
    return this.#request({ op: 'revocations', after, limit }, revocationsResult)
  }

  /**
   * The coordinator's signed revocation list, every entry checked from the fleet
   * root as agents check it. A coordinator older than the list has none
   * (`supported` false): it refuses the request as a payload it does not know.
   */
  async revocationList(): Promise<{ list: RevocationChain; supported: boolean }> {
    const list = new RevocationChain({ fleetRoot: this.home.fleetRoot, fleetId: this.home.fleet.fleetId })
    // An entry appended between pages shows as a head past the last page: ask again, a few times.
    for (let emptyPages = 0; emptyPages < 3; ) {
      let page: RevocationsPage
      try {
        page = await this.revocationsPage(list.head.seq)
      } catch (err) {
        if (err instanceof AdminRequestError && err.code === 'bad-payload' && list.head.seq === 0)
          return { list, supported: false }
        throw err
      }
      try {
        for (const entry of page.entries) list.append(entry)
      } catch (err) {
        if (!(err instanceof RevocationError)) throw err
        throw new AdminRequestError(
          'bad-revocations',
          `the coordinator's revocation list does not verify (${err.code}): ${err.message}`,
        )
      }
      if (page.entries.length > 0) continue
      const relation = list.relation(page.head)
      if (relation === 'same' || relation === 'behind') return { list, supported: true }
      if (relation === 'fork')
        throw new AdminRequestError(
          'bad-revocations',
          "the coordinator's revocation list head is not the list it sent",
        )
      emptyPages++
    }
    throw new AdminRequestError(
      'bad-revocations',
      'the coordinator names a revocation list head it does not send',
    )
  }

  /** The store paths the coordinator's Nix cache lacks (narinfo or NAR), asked in batches. */
  async nixMissing(storePaths: readonly string[]): Promise<string[]> {
    const missing: string[] = []
    for (const batch of batches(storePaths, NIX_MISSING_BATCH)) {
      const result = await this.#request({ op: 'nix-missing', storePaths: batch }, nixMissingResult)
      missing.push(...result.missing)
    }
    return missing
  }

  /** Stores narinfos whose NARs are already uploaded as blobs, in batches; the counts are summed. */
  async nixPut(narinfos: readonly string[]): Promise<NixPut> {
    const total: NixPut = { stored: 0, alreadyHad: 0 }
    for (const batch of batches(narinfos, NIX_PUT_BATCH)) {
      const result = await this.#request({ op: 'nix-put', narinfos: batch }, nixPutResult)
      total.stored += result.stored
      total.alreadyHad += result.alreadyHad
    }
    return total
  }

  /** How much of a store path's closure the coordinator's cache holds. */
  nixClosure(storePath: string): Promise<NixClosure> {
    return this.#request({ op: 'nix-closure', storePath }, nixClosureResult)
  }

  /** The last update log a machine reported. */
  machineLog(machine: string): Promise<MachineLog> {
    return this.#request({ op: 'machine-log', machine }, machineLogResult)
  }

  /** A machine's newest reports (at most `limit`, up to MAX_MACHINE_HISTORY), newest first. */
  machineHistory(machine: string, limit: number): Promise<MachineHistoryEntry[]> {
    return this.#request({ op: 'machine-history', machine, limit }, machineHistoryResult)
  }

  /** Round trips from the coordinator to a machine over its control stream, and the path it sees. */
  ping(machine: string, count: number): Promise<PingResult> {
    return this.#request({ op: 'ping', machine, count }, pingResult)
  }

  /** A machine's own diagnosis of its network, asked over its control stream. */
  doctor(machine: string): Promise<DoctorResult> {
    return this.#request({ op: 'doctor', machine }, doctorResult)
  }

  /** This admin's own round trip to the coordinator (libp2p ping), ms; null when it gets no answer. */
  async coordinatorRtt(timeoutMs = 5000): Promise<number | null> {
    try {
      return await this.host.services.ping.ping(this.#coordinator, { signal: AbortSignal.timeout(timeoutMs) })
    } catch {
      return null
    }
  }

  /**
   * Follows one rollout, or every machine when `rolloutId` is null; starts with a
   * snapshot, which for a rollout follows one `manifest` event per manifest of it.
   */
  async watch(rolloutId: string | null): Promise<AdminWatch> {
    const fs = await this.open({ op: 'watch', rolloutId })
    return {
      next: (timeoutMs) => this.readResult(fs, watchEvent, timeoutMs),
      close: () => fs.abort(new Error('watch finished')),
    }
  }

  /**
   * Follows one machine this admin covers (else refused as "unknown-machine"): a
   * snapshot of it, its status, online and offline events, and the output of its
   * running updates as its agent sends it (`update-log`: text at a byte offset of
   * the update's live log; a jump in the offsets is output lost on the way). A
   * coordinator older than this refuses the request as "bad-payload".
   */
  async watchMachine(machine: string): Promise<MachineWatch> {
    const fs = await this.open({ op: 'watch', rolloutId: null, machine })
    return {
      next: (timeoutMs) => this.readResult(fs, machineWatchEvent, timeoutMs),
      close: () => fs.abort(new Error('watch finished')),
    }
  }

  // ---------------------------------------------------------------- transport

  /** Opens a stream and sends one signed request; the caller reads the responses. */
  async open(op: AdminOp, timeoutMs = REQUEST_TIMEOUT_MS): Promise<FramedStream> {
    let stream: Awaited<ReturnType<FleetHost['dialProtocol']>> | undefined
    const failures: string[] = []
    for (const peer of [this.#coordinator, ...this.#fallbacks.filter((p) => !p.equals(this.#coordinator))]) {
      try {
        stream = await openStream(this.host, peer, PROTOCOLS.admin, {
          signal: AbortSignal.timeout(timeoutMs),
        })
        this.#coordinator = peer // later requests go where this one went
        break
      } catch (err) {
        const addrs = (await this.host.peerStore.get(peer).catch(() => undefined))?.addresses ?? []
        failures.push(
          `${peer} at ${addrs.map((a) => a.multiaddr.toString()).join(', ')}: ${(err as Error).message}`,
        )
      }
    }
    if (stream === undefined)
      throw new AdminRequestError(
        'unreachable',
        `cannot reach ${failures.length > 1 ? 'any coordinator of the fleet' : 'the coordinator'}: ${failures.join('; ')}`,
      )
    const fs = new FramedStream(stream, { maxFrameBytes: MAX_FRAME_BYTES })
    const envelope = sealEnvelope(
      adminRequestSchema,
      DOMAINS.adminRequest,
      { v: 1, nonce: randomBytes(16).toString('hex'), issuedAt: Date.now(), body: op },
      this.home.key,
      this.home.chain,
    )
    await fs.send(envelope)
    return fs
  }

  /** Reads one response and validates its result; a refusal becomes AdminRequestError. */
  async readResult<S extends z.ZodType>(
    fs: FramedStream,
    schema: S,
    timeoutMs?: number,
  ): Promise<z.output<S>> {
    const bytes = await fs.readOne(timeoutMs === undefined ? {} : { timeoutMs })
    const response: AdminResponse = decodeMessage(
      adminResponseSchema,
      bytes,
      'admin response',
      MAX_FRAME_BYTES,
    )
    if (!response.ok) throw new AdminRequestError(response.error.code, response.error.message)
    const parsed = schema.safeParse(response.result)
    if (!parsed.success)
      throw new AdminRequestError(
        'bad-response',
        `coordinator sent an invalid result: ${describeIssues(parsed.error)}`,
      )
    return parsed.data
  }

  /** One request, one response. */
  async #request<S extends z.ZodType>(op: AdminOp, schema: S): Promise<z.output<S>> {
    const fs = await this.open(op, REQUEST_TIMEOUT_MS)
    try {
      return await this.readResult(fs, schema, REQUEST_TIMEOUT_MS)
    } finally {
      await fs.close().catch(() => {})
    }
  }
}
