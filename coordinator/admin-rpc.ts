/**
 * The coordinator's side of `/fleetmesh/admin/1`. One stream per request: the
 * admin sends a signed AdminRequest envelope; the coordinator checks signature,
 * freshness, nonce (no replays), certificate chain, capability and scope, records
 * the attempt in the audit log whatever the outcome, then answers. `watch` keeps
 * the stream open and streams events; `upload-blob` is followed by data frames.
 */
import type { Connection } from '@libp2p/interface'
import type { PrivateKey, PublicKey } from '../keys/index.ts'
import {
  type Authority,
  authorityCovers,
  type Capability,
  CertificateError,
  DOMAINS,
  type ScopeTarget,
  verifyChain,
} from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'
import type { FramedStream, MachineView, WatchEvent } from '../protocol/index.ts'
import {
  type AdminOp,
  type AdminResponse,
  adminRequestSchema,
  adminResponseSchema,
  decodeMessage,
  EnvelopeError,
  encodeMessage,
  MAX_ENVELOPE_BYTES,
  manifestSchema,
  openEnvelope,
} from '../protocol/index.ts'
import { signAuditHash } from './audit.ts'
import { BlobError, type BlobStore } from './blobs.ts'
import type { ControlService } from './control.ts'
import type { FleetEvent, FleetEvents } from './events.ts'
import { type FleetStore, type ManifestRecord, StoreConflictError } from './store.ts'
import { machineView } from './views.ts'

/** Requests older or newer than this are refused, which bounds how long nonces must be remembered. */
export const REQUEST_WINDOW_MS = 5 * 60_000
const WATCH_BUFFER_LIMIT = 10_000

export interface AdminRpcInit {
  store: FleetStore
  events: FleetEvents
  control: ControlService
  blobs: BlobStore
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
  revoke: 'admin',
}

export class AdminRpc {
  readonly #init: AdminRpcInit
  readonly #sign: (hash: Uint8Array) => Uint8Array

  constructor(init: AdminRpcInit) {
    this.#init = init
    this.#sign = signAuditHash(init.key)
  }

  readonly handle = async (fs: FramedStream, connection: Connection): Promise<void> => {
    const request = await fs.readOne({ timeoutMs: 30_000 })
    const peerId = connection.remotePeer.toString()
    let actor: string | null = null
    let action = 'unknown'
    try {
      const opened = openEnvelope(adminRequestSchema, DOMAINS.adminRequest, request, MAX_ENVELOPE_BYTES)
      actor = opened.signer.toString()
      const body = opened.value.body
      action = body.op
      const now = Date.now()
      if (Math.abs(now - opened.value.issuedAt) > REQUEST_WINDOW_MS) {
        throw new AdminDenied(
          'stale-request',
          `request issued at ${new Date(opened.value.issuedAt).toISOString()} is outside the ±5 min window; check this machine's clock`,
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
      if (
        !(await this.#init.store.rememberNonce(opened.value.nonce, opened.value.issuedAt + REQUEST_WINDOW_MS))
      ) {
        throw new AdminDenied(
          'replayed',
          'this request was already received once; a request cannot be replayed',
        )
      }
      await this.#dispatch(fs, body, authority, request, peerId, actor)
    } catch (err) {
      const denied =
        err instanceof AdminDenied || err instanceof CertificateError || err instanceof EnvelopeError
      const code =
        err instanceof AdminDenied || err instanceof CertificateError || err instanceof EnvelopeError
          ? err.code
          : 'internal'
      const message = (err as Error).message
      await this.#audit(peerId, actor, action, denied ? 'denied' : 'error', `${code}: ${message}`, request)
      this.#init.log(`admin: ${action} from ${peerId} ${denied ? 'denied' : 'failed'}: ${message}`)
      await this.#respond(fs, { ok: false, error: { code, message: message.slice(0, 2000) } }).catch(() => {})
    }
  }

  async #dispatch(
    fs: FramedStream,
    body: AdminOp,
    authority: Authority,
    request: Uint8Array,
    peerId: string,
    actor: string,
  ): Promise<void> {
    const { store } = this.#init
    switch (body.op) {
      case 'fleet-info': {
        const machines = await store.listMachines()
        await this.#ok(fs, peerId, actor, body.op, request, {
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
      case 'machines': {
        const visible = await this.#visibleMachines(authority)
        await this.#ok(fs, peerId, actor, body.op, request, visible)
        return
      }
      case 'audit': {
        const records = await store.listAudit(body.after, body.limit)
        await this.#ok(fs, peerId, actor, body.op, request, records)
        return
      }
      case 'revoke': {
        await store.revoke(body.serial, body.reason, Date.now())
        await this.#ok(
          fs,
          peerId,
          actor,
          body.op,
          request,
          { revoked: body.serial },
          `serial ${body.serial}: ${body.reason}`,
        )
        return
      }
      case 'submit-manifest': {
        const result = await this.#submit(body.envelope, actor)
        await this.#ok(
          fs,
          peerId,
          actor,
          body.op,
          request,
          result,
          `manifest ${result.manifestId} seq ${result.sequence} → ${result.machines.join(', ')}`,
        )
        for (const m of result.machines) await this.#init.control.pushDesired(m)
        return
      }
      case 'upload-blob': {
        await this.#upload(fs, body.sha256, body.size, peerId, actor, request)
        return
      }
      case 'watch': {
        await this.#audit(peerId, actor, body.op, 'ok', body.rolloutId ?? 'all', request)
        await this.#watch(fs, body.rolloutId, authority)
        return
      }
    }
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

  async #machineView(name: string, authority: Authority): Promise<MachineView | undefined> {
    const { store, control } = this.#init
    const m = await store.getMachine(name)
    if (m === undefined || !authorityCovers(authority, { kind: 'machine', name: m.name, tags: m.tags }))
      return undefined
    return machineView(
      m,
      await store.latestStatus(name),
      await store.getDesired(name),
      control.online.has(name),
    )
  }

  async #submit(envelope: Uint8Array, actor: string) {
    const { store } = this.#init
    let opened: ReturnType<typeof openEnvelope<typeof manifestSchema>>
    try {
      opened = openEnvelope(manifestSchema, DOMAINS.manifest, envelope)
    } catch (err) {
      throw new AdminDenied('bad-manifest', `manifest rejected: ${(err as Error).message}`)
    }
    const m = opened.value
    const now = Date.now()
    // The manifest's own chain is what agents will check; check it the same way here
    // so an admin learns now, not from every device, that it would be refused.
    verifyChain(opened.chain, {
      root: this.#init.fleetRoot,
      signer: opened.signer,
      capability: 'deploy',
      target: { kind: 'selector', machines: m.targets.machines, tags: m.targets.tags },
      revokedSerials: await store.revokedSerials(),
      now,
    })
    if (m.fleetId !== this.#init.fleetId)
      throw new AdminDenied(
        'wrong-fleet',
        `manifest is for fleet "${m.fleetId}", this is "${this.#init.fleetId}"`,
      )
    if (m.expiresAt <= now) throw new AdminDenied('expired', 'manifest has already expired')
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
    const machines = all
      .filter((x) => m.targets.machines.includes(x.name) || x.tags.some((t) => m.targets.tags.includes(t)))
      .map((x) => x.name)
    const unknown = m.targets.machines.filter((n) => !all.some((x) => x.name === n))
    const record: ManifestRecord = {
      id: m.id,
      sequence: m.sequence,
      rolloutId: m.rolloutId,
      generation: m.generation,
      targets: m.targets,
      envelope,
      submittedBy: actor,
      submittedAt: now,
      expiresAt: m.expiresAt,
      machines,
    }
    try {
      await store.addManifest(record, machines)
    } catch (err) {
      if (err instanceof StoreConflictError) throw new AdminDenied(err.code, err.message)
      throw err
    }
    this.#init.events.emit({ type: 'manifest', manifest: record })
    return { manifestId: m.id, rolloutId: m.rolloutId, sequence: m.sequence, machines, unknown }
  }

  async #upload(
    fs: FramedStream,
    sha256: string,
    size: number,
    peerId: string,
    actor: string,
    request: Uint8Array,
  ): Promise<void> {
    const { blobs } = this.#init
    const existing = await blobs.size(sha256)
    if (existing !== undefined) {
      await this.#ok(
        fs,
        peerId,
        actor,
        'upload-blob',
        request,
        { offset: size, complete: true },
        `${sha256} already stored`,
      )
      return
    }
    const offset = await blobs.partialSize(sha256)
    await this.#respond(fs, { ok: true, result: { offset, complete: false } })
    try {
      const outcome = await blobs.receive(sha256, size, offset, fs.frames())
      await this.#audit(peerId, actor, 'upload-blob', 'ok', `${sha256} ${outcome} (${size} bytes)`, request)
      await this.#respond(fs, { ok: true, result: { complete: outcome === 'complete' } })
    } catch (err) {
      if (err instanceof BlobError) throw new AdminDenied(err.code, err.message)
      throw err
    }
  }

  async #watch(fs: FramedStream, rolloutId: string | null, authority: Authority): Promise<void> {
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

  async #ok(
    fs: FramedStream,
    peerId: string,
    actor: string,
    action: string,
    request: Uint8Array,
    result: unknown,
    detail = '',
  ): Promise<void> {
    await this.#audit(peerId, actor, action, 'ok', detail, request)
    await this.#respond(fs, { ok: true, result })
  }

  async #respond(fs: FramedStream, response: AdminResponse): Promise<void> {
    await fs.send(encodeMessage(adminResponseSchema, response))
  }

  async #audit(
    peerId: string,
    actor: string | null,
    action: string,
    outcome: 'ok' | 'denied' | 'error',
    detail: string,
    request: Uint8Array,
  ): Promise<void> {
    await this.#init.store.appendAudit(
      {
        at: Date.now(),
        peerId,
        actor,
        action,
        outcome,
        detail: detail.slice(0, 2000),
        request: request.byteLength <= 256 * 1024 ? request : null,
      },
      this.#sign,
    )
  }
}

export function decodeAdminResponse(bytes: Uint8Array): AdminResponse {
  return decodeMessage(adminResponseSchema, bytes, 'admin response', MAX_ENVELOPE_BYTES * 64)
}
