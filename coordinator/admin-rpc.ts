/**
 * The coordinator's side of `/fleetmesh/admin/1`. One stream per request: the
 * admin sends a signed AdminRequest envelope; the coordinator checks signature,
 * freshness, certificate chain, capability and scope, and nonce (no replays),
 * which yields the request context every handler gets; it audits the attempt
 * whatever the outcome (audit-trail.ts: changes and refusals in the hash-chained
 * log, reads counted apart, strangers' refusals rate-limited), then answers. `watch` keeps the stream open
 * and streams events (admin-watch.ts); `upload-blob` is followed by data frames. Submitted
 * manifests pass the same admission rules as on the agents (protocol/manifest.ts).
 * The `nix-*` ops reach the Nix binary cache (nix-cache.ts); `ping` and `doctor`
 * reach one agent over its control stream (admin-diagnose.ts). Who is asking and
 * what each op needs is in admin-context.ts.
 */
import type { Connection } from '@libp2p/interface'
import {
  type Authority,
  authorityCoversSomeSelector,
  DOMAINS,
  type PrivateKey,
  type PublicKey,
  type ScopeTarget,
  verifyChain,
} from '../keys/index.ts'
import type { CodedError } from '../lib/index.ts'
import {
  type AdminOp,
  type AdminRequest,
  type AdminResponse,
  adminRequestSchema,
  adminResponseSchema,
  admitManifest,
  encodeMessage,
  type FramedStream,
  MAX_ENVELOPE_BYTES,
  type MachineLog,
  type MachineView,
  type Opened,
  openEnvelope,
  type SubmitResult,
  targetsMachine,
} from '../protocol/index.ts'
import { runApplyOp, submitResultOf } from './admin-apply.ts'
import {
  AdminDenied,
  type AdminRequestContext,
  type Caller,
  capabilityFor,
  REFUSALS,
} from './admin-context.ts'
import { runDiagnoseOp } from './admin-diagnose.ts'
import { runNixOp } from './admin-nix.ts'
import { revocationsPage, runRevokeOp } from './admin-revoke.ts'
import { runRolloutOp } from './admin-rollouts.ts'
import { runTagsOp } from './admin-tags.ts'
import { streamWatch } from './admin-watch.ts'
import { AdminAudit } from './audit-trail.ts'
import { BlobAccess } from './blob-access.ts'
import { BlobError, type BlobStore } from './blobs.ts'
import type { ControlService } from './control.ts'
import type { FleetEvents } from './events.ts'
import { coveredMachines, requireCoveredMachine } from './machine-scope.ts'
import type { NixCache } from './nix-cache.ts'
import type { RolloutEngine } from './rollout-engine.ts'
import { type FleetStore, type MachineRecord, type ManifestRecord, StoreConflictError } from './store.ts'
import { machineHistoryView, machineLogView, machineView } from './views.ts'

/** Requests older or newer than this are refused, which bounds how long nonces must be remembered. */
export const REQUEST_WINDOW_MS = 5 * 60_000
/** Room in an audit page's frame for the response around the records. */
const AUDIT_PAGE_SLACK = 1024

export interface AdminRpcInit {
  store: FleetStore
  events: FleetEvents
  control: ControlService
  blobs: BlobStore
  nixCache: NixCache
  rollouts: RolloutEngine
  key: PrivateKey
  fleetId: string
  fleetRoot: PublicKey
  log: (msg: string) => void
}

export class AdminRpc {
  readonly #init: AdminRpcInit
  readonly #audit: AdminAudit
  readonly #blobAccess = new BlobAccess()

  constructor(init: AdminRpcInit) {
    this.#init = init
    this.#audit = new AdminAudit({ store: init.store, key: init.key })
  }

  readonly handle = async (fs: FramedStream, connection: Connection): Promise<void> => {
    const request = await fs.readOne({ timeoutMs: 30_000 })
    const caller: Caller = { peerId: connection.remotePeer.toString(), actor: null, request }
    let action = 'unknown'
    let authenticated = false
    try {
      const opened = openEnvelope(adminRequestSchema, DOMAINS.adminRequest, request, MAX_ENVELOPE_BYTES)
      action = opened.value.body.op
      const ctx = await this.#authenticate(opened, caller, connection, fs)
      authenticated = true
      await this.#dispatch(ctx, opened.value.body)
    } catch (err) {
      const denied = REFUSALS.some((kind) => err instanceof kind)
      const code = denied ? (err as CodedError).code : 'internal'
      const message = (err as Error).message
      const outcome = denied ? 'denied' : 'error'
      const audited = await this.#audit.record({
        caller,
        action,
        outcome,
        detail: `${code}: ${message}`,
        authenticated,
      })
      // Rate-limited refusals are not logged either: a flood must not fill the journal instead.
      if (audited !== 'counted')
        this.#init.log(`admin: ${action} from ${caller.peerId} ${denied ? 'denied' : 'failed'}: ${message}`)
      await this.#respond(fs, { ok: false, error: { code, message: message.slice(0, 2000) } }).catch(() => {})
    }
  }

  /** Freshness, certificate chain (capability and scope), then the nonce; throws AdminDenied or CertificateError. */
  async #authenticate(
    opened: Opened<AdminRequest>,
    caller: Caller,
    connection: Connection,
    stream: FramedStream,
  ): Promise<AdminRequestContext> {
    // From here on the attempt is audited under the signer's key, also when it is denied.
    const actor = opened.signer.toString()
    caller.actor = actor
    const { nonce, issuedAt, body } = opened.value
    const now = Date.now()
    if (Math.abs(now - issuedAt) > REQUEST_WINDOW_MS) {
      throw new AdminDenied(
        'stale-request',
        `request issued at ${new Date(issuedAt).toISOString()} is outside the ±5 min window; check this machine's clock`,
      )
    }
    const authority = verifyChain(opened.chain, {
      root: this.#init.fleetRoot,
      signer: opened.signer,
      capability: capabilityFor(body),
      revokedSerials: await this.#init.store.revokedSerials(),
      now,
      // Revocation and the audit log concern the whole fleet, not a slice of it.
      ...(body.op === 'revoke' || body.op === 'audit' || body.op === 'audit-reads'
        ? { target: { kind: 'fleet' } satisfies ScopeTarget }
        : {}),
    })
    if (!(await this.#init.store.rememberNonce(nonce, issuedAt + REQUEST_WINDOW_MS))) {
      throw new AdminDenied(
        'replayed',
        'this request was already received once; a request cannot be replayed',
      )
    }
    return {
      peerId: caller.peerId,
      actor,
      request: caller.request,
      signer: opened.signer,
      authority,
      op: body.op,
      nonce,
      issuedAt,
      receivedAt: now,
      connection,
      stream,
    }
  }

  async #dispatch(ctx: AdminRequestContext, body: AdminOp): Promise<void> {
    const { store } = this.#init
    switch (body.op) {
      case 'fleet-info': {
        // Counts of the machines the caller covers, as `machines` lists them: a scoped admin
        // learns nothing of the size of the rest of the fleet. maxSequence stays fleet-wide:
        // every deployer numbers its manifest above it.
        const machines = await this.#coveredMachines(ctx.authority)
        await this.#ok(ctx, {
          fleetId: this.#init.fleetId,
          fleetRoot: this.#init.fleetRoot.toString(),
          coordinator: this.#init.key.publicKey.toString(),
          maxSequence: await store.maxSequence(),
          machines: machines.length,
          online: machines.filter((m) => this.#init.control.isOnline(m.name)).length,
          memory: { rss: process.memoryUsage.rss(), heapUsed: process.memoryUsage().heapUsed },
        })
        return
      }
      case 'machines':
        await this.#ok(ctx, await this.#visibleMachines(ctx.authority))
        return
      case 'audit': {
        // Cut by bytes too: a page of large records must still fit one frame.
        const maxBytes = ctx.stream.maxFrameBytes - AUDIT_PAGE_SLACK
        await this.#ok(ctx, await store.listAudit(body.after, body.limit, maxBytes))
        return
      }
      case 'audit-reads':
        await this.#ok(ctx, await store.listReads(body.limit))
        return
      case 'revoke': {
        const { result, detail } = await runRevokeOp(this.#init, ctx.signer, body)
        // Open watches check their admin's chain again at once.
        this.#init.events.emit({ type: 'revoked', serial: result.revoked })
        await this.#ok(ctx, result, detail)
        this.#init.control.pushRevocations()
        return
      }
      case 'revocations':
        await this.#ok(ctx, await revocationsPage(this.#init, body))
        return
      case 'submit-manifest': {
        const result = await this.#submit(ctx, body.envelope)
        await this.#ok(
          ctx,
          result,
          `manifest ${result.manifestId} seq ${result.sequence} → ${result.machines.join(', ')}`,
        )
        await this.#init.control.pushDesired(result.machines)
        return
      }
      case 'upload-blob':
        await this.#upload(ctx, body.sha256, body.size)
        return
      case 'submit-waves':
      case 'rollout-list':
      case 'rollout-show':
      case 'rollout-control':
      case 'desired-manifests': {
        const admit = (envelope: Uint8Array) => this.#admit(ctx, envelope)
        const { result, detail } = await runRolloutOp(this.#init, ctx.authority, ctx.actor, body, admit)
        await this.#ok(ctx, result, detail)
        return
      }
      case 'watch':
        // One machine: refused as unknown unless the caller covers it (so its name says nothing otherwise).
        if (body.machine !== undefined) await requireCoveredMachine(store, ctx.authority, body.machine)
        await this.#audited(ctx, body.machine ?? body.rolloutId ?? 'all')
        await streamWatch(this.#init, ctx.stream, ctx.authority, body.rolloutId, body.machine ?? null)
        return
      case 'nix-missing':
      case 'nix-put':
      case 'nix-closure': {
        const { nixCache } = this.#init
        const { result, detail } = await runNixOp(nixCache, body, Date.now(), ctx.stream.maxFrameBytes)
        await this.#ok(ctx, result, detail)
        return
      }
      case 'machine-log':
        await this.#ok(ctx, await this.#machineLog(ctx.authority, body.machine), body.machine)
        return
      case 'machine-history':
        await requireCoveredMachine(this.#init.store, ctx.authority, body.machine)
        await this.#ok(
          ctx,
          machineHistoryView(await this.#init.store.statusHistory(body.machine, body.limit)),
          body.machine,
        )
        return
      case 'apply': {
        const admit = (envelope: Uint8Array, among: readonly MachineRecord[]) =>
          this.#admit(ctx, envelope, among)
        const { result, detail, announce } = await runApplyOp(this.#init, ctx, body, admit)
        await this.#ok(ctx, result, detail)
        await announce()
        return
      }
      case 'set-tags':
      case 'tag-versions': {
        const { result, detail, changed } = await runTagsOp(this.#init, ctx, body)
        await this.#ok(ctx, result, detail)
        for (const m of changed) await this.#init.control.pushTags(m)
        return
      }
      case 'ping':
      case 'doctor': {
        const { result, detail } = await runDiagnoseOp(this.#init, ctx.authority, body)
        await this.#ok(ctx, result, detail)
        return
      }
    }
  }

  /** The update log of a machine the caller's certificate covers. */
  async #machineLog(authority: Authority, name: string): Promise<MachineLog> {
    await requireCoveredMachine(this.#init.store, authority, name)
    return machineLogView(name, await this.#init.store.latestLogReport(name))
  }

  async #visibleMachines(authority: Authority): Promise<MachineView[]> {
    const { store, control } = this.#init
    const latest = await store.latestStatuses()
    const out: MachineView[] = []
    for (const m of await this.#coveredMachines(authority))
      out.push(machineView(m, latest.get(m.name), await store.getDesired(m.name), control.isOnline(m.name)))
    return out
  }

  #coveredMachines(authority: Authority): Promise<MachineRecord[]> {
    return coveredMachines(this.#init.store, authority)
  }

  async #submit(ctx: AdminRequestContext, envelope: Uint8Array): Promise<SubmitResult> {
    const record = await this.#admit(ctx, envelope)
    try {
      // The store orders manifests: a sequence not above every stored one is 'stale-sequence'.
      await this.#init.store.addManifest(record, record.machines)
    } catch (err) {
      if (err instanceof StoreConflictError) throw new AdminDenied(err.code, err.message)
      throw err
    }
    this.#init.events.emit({ type: 'manifest', manifest: record })
    return submitResultOf(record)
  }

  /** Admission (as the agents check it) and the blob check of a manifest, with its targets resolved. */
  async #admit(
    ctx: AdminRequestContext,
    envelope: Uint8Array,
    among?: readonly MachineRecord[],
  ): Promise<ManifestRecord> {
    const { store } = this.#init
    const now = Date.now()
    // The agents apply the same rules before they act on it; applying them here too means
    // an admin learns now, not from every device, that the manifest would be refused.
    const { manifest: m } = admitManifest(envelope, {
      fleetRoot: this.#init.fleetRoot,
      fleetId: this.#init.fleetId,
      revokedSerials: await store.revokedSerials(),
      revocations: await store.revocationLog.state(),
      now,
    })
    if (m.payload.kind === 'archive' && m.payload.sources.some((s) => s.kind === 'coordinator')) {
      const { sha256 } = m.payload
      // A blob the caller may not know of is "not on the coordinator" to it (blob-access.ts).
      const known = this.#blobAccess.mayKnow(ctx.authority, ctx.actor, sha256)
      const size = known ? await this.#init.blobs.size(sha256) : undefined
      if (size === undefined)
        throw new AdminDenied(
          'blob-missing',
          `blob ${m.payload.sha256} is not on the coordinator; upload it first`,
        )
      if (size !== m.payload.size)
        throw new AdminDenied(
          'blob-size',
          `blob ${m.payload.sha256} has ${size} bytes, manifest says ${m.payload.size}`,
        )
    }
    const all = among ?? (await store.listMachines())
    const machines = all.filter((x) => targetsMachine(m.targets, x.name, x.tags)).map((x) => x.name)
    return {
      id: m.id,
      sequence: m.sequence,
      rolloutId: m.rolloutId,
      generation: m.generation,
      targets: m.targets,
      envelope,
      submittedBy: ctx.actor,
      submittedAt: now,
      expiresAt: m.expiresAt,
      machines,
    }
  }

  /**
   * `upload-blob`. A blob has no target, so the chain check asked only for
   * "deploy"; it must also cover some machine or tag, or the blob could never be
   * deployed by this admin. "Already stored" is said only to an admin who may
   * know it (blob-access.ts); any other sends the bytes, and learns nothing.
   */
  async #upload(ctx: AdminRequestContext, sha256: string, size: number): Promise<void> {
    const { blobs } = this.#init
    if (!authorityCoversSomeSelector(ctx.authority)) {
      const { serial, name } = ctx.authority.leaf
      throw new AdminDenied(
        'out-of-scope',
        `certificate ${serial} ("${name}") grants "deploy" on no machine or tag (its chain's scopes do not overlap), ` +
          'so it may not upload blobs; ask for a certificate whose scope names machines or tags',
      )
    }
    if (
      this.#blobAccess.mayKnow(ctx.authority, ctx.actor, sha256) &&
      (await blobs.size(sha256)) !== undefined
    ) {
      await this.#ok(ctx, { offset: size, complete: true }, `${sha256} already stored`)
      return
    }
    try {
      // Bounded by the upload caps and timeouts (blobs.ts); the admin resumes from `offset`.
      const outcome = await blobs.upload(ctx.actor, sha256, size, {
        started: (offset) => this.#respond(ctx.stream, { ok: true, result: { offset, complete: false } }),
        read: (options) => ctx.stream.read(options),
      })
      if (outcome === 'complete') this.#blobAccess.proven(ctx.actor, sha256)
      await this.#audited(ctx, `${sha256} ${outcome} (${size} bytes)`)
      await this.#respond(ctx.stream, { ok: true, result: { complete: outcome === 'complete' } })
    } catch (err) {
      if (err instanceof BlobError) throw new AdminDenied(err.code, err.message)
      throw err
    }
  }

  async #ok(ctx: AdminRequestContext, result: unknown, detail = ''): Promise<void> {
    await this.#audited(ctx, detail)
    await this.#respond(ctx.stream, { ok: true, result })
  }

  /** Audits the request as done. */
  async #audited(ctx: AdminRequestContext, detail: string): Promise<void> {
    await this.#audit.record({ caller: ctx, action: ctx.op, outcome: 'ok', detail, authenticated: true })
  }

  async #respond(fs: FramedStream, response: AdminResponse): Promise<void> {
    await fs.send(encodeMessage(adminResponseSchema, response))
  }
}
