/**
 * The coordinator's side of `/fleetmesh/admin/1`. One stream per request: the
 * admin sends a signed AdminRequest envelope; the coordinator checks signature,
 * freshness, certificate chain, capability and scope, and nonce (no replays),
 * which yields the request context every handler gets; it records the attempt in
 * the audit log whatever the outcome, then answers. `watch` keeps the stream open
 * and streams events; `upload-blob` is followed by data frames. Submitted
 * manifests pass the same admission rules as on the agents (protocol/manifest.ts).
 * The `nix-*` ops reach the Nix binary cache (nix-cache.ts).
 */
import type { Connection } from '@libp2p/interface'
import {
  type Authority,
  authorityCovers,
  type Capability,
  CertificateError,
  DOMAINS,
  type PrivateKey,
  type PublicKey,
  type ScopeTarget,
  verifyChain,
} from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'
import {
  type AdminOp,
  type AdminRequest,
  type AdminResponse,
  adminRequestSchema,
  adminResponseSchema,
  admitManifest,
  EnvelopeError,
  encodeMessage,
  type FramedStream,
  MAX_ENVELOPE_BYTES,
  type MachineLog,
  type MachineView,
  ManifestRefusedError,
  type Opened,
  openEnvelope,
  type SubmitResult,
  targetsMachine,
  type WatchEvent,
} from '../protocol/index.ts'
import { runNixOp } from './admin-nix.ts'
import { signAuditHash } from './audit.ts'
import { BlobError, type BlobStore } from './blobs.ts'
import type { ControlService } from './control.ts'
import type { FleetEvent, FleetEvents } from './events.ts'
import { type NixCache, NixCacheError } from './nix-cache.ts'
import {
  type FleetStore,
  MAX_AUDIT_REQUEST_BYTES,
  type MachineRecord,
  type ManifestRecord,
  StoreConflictError,
} from './store.ts'
import { machineLogView, machineView } from './views.ts'

/** Requests older or newer than this are refused, which bounds how long nonces must be remembered. */
export const REQUEST_WINDOW_MS = 5 * 60_000
const WATCH_BUFFER_LIMIT = 10_000

export interface AdminRpcInit {
  store: FleetStore
  events: FleetEvents
  control: ControlService
  blobs: BlobStore
  nixCache: NixCache
  key: PrivateKey
  fleetId: string
  fleetRoot: PublicKey
  log: (msg: string) => void
}

export class AdminDenied extends CodedError<string> {
  override name = 'AdminDenied'
}

const CAPABILITY: Record<AdminOp['op'], Capability> = {
  'fleet-info': 'read',
  machines: 'read',
  watch: 'read',
  audit: 'read',
  'submit-manifest': 'deploy',
  'upload-blob': 'deploy',
  'nix-missing': 'deploy',
  'nix-put': 'deploy',
  'nix-closure': 'deploy',
  'machine-log': 'read',
  revoke: 'admin',
}

/** What the audit log records about whoever sent a request, also one refused before its signature was checked. */
interface Caller {
  peerId: string
  /** The signer's public key once the envelope opened, else null. */
  actor: string | null
  /** The request exactly as received. */
  request: Uint8Array
}

/**
 * Who is asking, established before any handler runs: the request's signature,
 * freshness, nonce and certificate chain have all been checked.
 */
export interface AdminRequestContext extends Caller {
  actor: string
  signer: PublicKey
  /** The signer's verified certificate chain: who they are, their capabilities and scope. */
  authority: Authority
  op: AdminOp['op']
  /** The request's nonce, unique per request: its id. */
  nonce: string
  issuedAt: number
  receivedAt: number
  connection: Connection
  stream: FramedStream
}

/** Refusals the admin is told about as such; anything else is an internal error. */
const REFUSALS = [AdminDenied, CertificateError, EnvelopeError, ManifestRefusedError, NixCacheError] as const

export class AdminRpc {
  readonly #init: AdminRpcInit
  readonly #sign: (hash: Uint8Array) => Uint8Array

  constructor(init: AdminRpcInit) {
    this.#init = init
    this.#sign = signAuditHash(init.key)
  }

  readonly handle = async (fs: FramedStream, connection: Connection): Promise<void> => {
    const request = await fs.readOne({ timeoutMs: 30_000 })
    const caller: Caller = { peerId: connection.remotePeer.toString(), actor: null, request }
    let action = 'unknown'
    try {
      const opened = openEnvelope(adminRequestSchema, DOMAINS.adminRequest, request, MAX_ENVELOPE_BYTES)
      action = opened.value.body.op
      const ctx = await this.#authenticate(opened, caller, connection, fs)
      await this.#dispatch(ctx, opened.value.body)
    } catch (err) {
      const denied = REFUSALS.some((kind) => err instanceof kind)
      const code = denied ? (err as CodedError).code : 'internal'
      const message = (err as Error).message
      await this.#audit(caller, action, denied ? 'denied' : 'error', `${code}: ${message}`)
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
      capability: CAPABILITY[body.op],
      revokedSerials: await this.#init.store.revokedSerials(),
      now,
      // Revocation and the audit log concern the whole fleet, not a slice of it.
      ...(body.op === 'revoke' || body.op === 'audit'
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
        const machines = await store.listMachines()
        await this.#ok(ctx, {
          fleetId: this.#init.fleetId,
          fleetRoot: this.#init.fleetRoot.toString(),
          coordinator: this.#init.key.publicKey.toString(),
          maxSequence: await store.maxSequence(),
          machines: machines.length,
          online: this.#init.control.online.size,
          memory: { rss: process.memoryUsage.rss(), heapUsed: process.memoryUsage().heapUsed },
        })
        return
      }
      case 'machines':
        await this.#ok(ctx, await this.#visibleMachines(ctx.authority))
        return
      case 'audit':
        await this.#ok(ctx, await store.listAudit(body.after, body.limit))
        return
      case 'revoke':
        await store.revoke(body.serial, body.reason, Date.now())
        await this.#ok(ctx, { revoked: body.serial }, `serial ${body.serial}: ${body.reason}`)
        return
      case 'submit-manifest': {
        const result = await this.#submit(ctx, body.envelope)
        await this.#ok(
          ctx,
          result,
          `manifest ${result.manifestId} seq ${result.sequence} → ${result.machines.join(', ')}`,
        )
        for (const m of result.machines) await this.#init.control.pushDesired(m)
        return
      }
      case 'upload-blob':
        await this.#upload(ctx, body.sha256, body.size)
        return
      case 'watch':
        await this.#audit(ctx, ctx.op, 'ok', body.rolloutId ?? 'all')
        await this.#watch(ctx, body.rolloutId)
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
    }
  }

  /** The update log of a machine the caller's certificate covers. */
  async #machineLog(authority: Authority, name: string): Promise<MachineLog> {
    if ((await this.#coveredMachine(name, authority)) === undefined)
      throw new AdminDenied(
        'unknown-machine',
        `no machine named "${name}" is enrolled, or your certificate does not cover it; see "fleetmesh machines"`,
      )
    return machineLogView(name, await this.#init.store.latestLogReport(name))
  }

  async #visibleMachines(authority: Authority): Promise<MachineView[]> {
    const { store, control } = this.#init
    const latest = await store.latestStatuses()
    const out: MachineView[] = []
    for (const m of await store.listMachines()) {
      if (!authorityCovers(authority, { kind: 'machine', name: m.name, tags: m.tags })) continue
      out.push(machineView(m, latest.get(m.name), await store.getDesired(m.name), control.online.has(m.name)))
    }
    return out
  }

  /** The machine, if it is enrolled and the caller's certificate covers it. */
  async #coveredMachine(name: string, authority: Authority): Promise<MachineRecord | undefined> {
    const m = await this.#init.store.getMachine(name)
    return m !== undefined && authorityCovers(authority, { kind: 'machine', name: m.name, tags: m.tags })
      ? m
      : undefined
  }

  async #machineView(name: string, authority: Authority): Promise<MachineView | undefined> {
    const { store, control } = this.#init
    const m = await this.#coveredMachine(name, authority)
    if (m === undefined) return undefined
    return machineView(
      m,
      await store.latestStatus(name),
      await store.getDesired(name),
      control.online.has(name),
    )
  }

  async #submit(ctx: AdminRequestContext, envelope: Uint8Array): Promise<SubmitResult> {
    const { store } = this.#init
    const now = Date.now()
    // The agents apply the same rules before they act on it; applying them here too means
    // an admin learns now, not from every device, that the manifest would be refused.
    const { manifest: m } = admitManifest(envelope, {
      fleetRoot: this.#init.fleetRoot,
      fleetId: this.#init.fleetId,
      revokedSerials: await store.revokedSerials(),
      now,
    })
    if (m.payload.kind === 'archive' && m.payload.sources.some((s) => s.kind === 'coordinator')) {
      const size = await this.#init.blobs.size(m.payload.sha256)
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
    const all = await store.listMachines()
    const machines = all.filter((x) => targetsMachine(m.targets, x.name, x.tags)).map((x) => x.name)
    const unknown = m.targets.machines.filter((n) => !all.some((x) => x.name === n))
    const record: ManifestRecord = {
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
    try {
      // The store orders manifests: a sequence not above every stored one is 'stale-sequence'.
      await store.addManifest(record, machines)
    } catch (err) {
      if (err instanceof StoreConflictError) throw new AdminDenied(err.code, err.message)
      throw err
    }
    this.#init.events.emit({ type: 'manifest', manifest: record })
    return { manifestId: m.id, rolloutId: m.rolloutId, sequence: m.sequence, machines, unknown }
  }

  async #upload(ctx: AdminRequestContext, sha256: string, size: number): Promise<void> {
    const { blobs } = this.#init
    const existing = await blobs.size(sha256)
    if (existing !== undefined) {
      await this.#ok(ctx, { offset: size, complete: true }, `${sha256} already stored`)
      return
    }
    const offset = await blobs.partialSize(sha256)
    await this.#respond(ctx.stream, { ok: true, result: { offset, complete: false } })
    try {
      const outcome = await blobs.receive(sha256, size, offset, ctx.stream.frames())
      await this.#audit(ctx, ctx.op, 'ok', `${sha256} ${outcome} (${size} bytes)`)
      await this.#respond(ctx.stream, { ok: true, result: { complete: outcome === 'complete' } })
    } catch (err) {
      if (err instanceof BlobError) throw new AdminDenied(err.code, err.message)
      throw err
    }
  }

  async #watch(ctx: AdminRequestContext, rolloutId: string | null): Promise<void> {
    const { stream: fs, authority } = ctx
    const queue: FleetEvent[] = []
    let wake: (() => void) | undefined
    let overflow = false
    const off = this.#init.events.on((e) => {
      if (rolloutId !== null && e.type === 'status' && e.status.report.rolloutId !== rolloutId) return
      if (queue.length >= WATCH_BUFFER_LIMIT) overflow = true
      else queue.push(e)
      wake?.()
    })
    const closed = new Promise<void>((resolve) =>
      fs.stream.addEventListener('close', () => resolve(), { once: true }),
    )
    try {
      await this.#respond(fs, {
        ok: true,
        result: { type: 'snapshot', machines: await this.#visibleMachines(authority) },
      })
      while (fs.stream.status === 'open') {
        if (overflow)
          throw new AdminDenied(
            'watch-overflow',
            'watcher fell too far behind; reconnect to get a fresh snapshot',
          )
        const e = queue.shift()
        if (e === undefined) {
          await Promise.race([new Promise<void>((r) => (wake = r)), closed])
          wake = undefined
          continue
        }
        const view = await this.#eventView(e, authority)
        if (view !== undefined) await this.#respond(fs, { ok: true, result: view })
      }
    } finally {
      off()
    }
  }

  async #eventView(e: FleetEvent, authority: Authority): Promise<WatchEvent | undefined> {
    if (e.type === 'manifest') {
      return {
        type: 'manifest',
        manifestId: e.manifest.id,
        rolloutId: e.manifest.rolloutId,
        machines: e.manifest.machines,
      }
    }
    const view = await this.#machineView(e.type === 'enrolled' ? e.machine.name : e.machine, authority)
    return view === undefined ? undefined : { type: e.type, machine: view }
  }

  async #ok(ctx: AdminRequestContext, result: unknown, detail = ''): Promise<void> {
    await this.#audit(ctx, ctx.op, 'ok', detail)
    await this.#respond(ctx.stream, { ok: true, result })
  }

  async #respond(fs: FramedStream, response: AdminResponse): Promise<void> {
    await fs.send(encodeMessage(adminResponseSchema, response))
  }

  async #audit(
    caller: Caller,
    action: string,
    outcome: 'ok' | 'denied' | 'error',
    detail: string,
  ): Promise<void> {
    const { peerId, actor, request } = caller
    await this.#init.store.appendAudit(
      {
        at: Date.now(),
        peerId,
        actor,
        action,
        outcome,
        detail: detail.slice(0, 2000),
        request: request.byteLength <= MAX_AUDIT_REQUEST_BYTES ? request : null,
      },
      this.#sign,
    )
  }
}
