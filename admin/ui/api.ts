/**
 * The dashboard's JSON endpoints: each is one or two requests of the admin
 * client, so the coordinator checks every one against this admin's
 * certificate exactly as it checks the command line's. Actions that change
 * the fleet (deploy, rollout pause/resume/abort) need the deploy capability on
 * every link of the chain; without it they are refused here before anything
 * is sent, and the page does not offer them.
 *
 * A deploy from the page is the CLI's `deploy <archive> --to … --no-watch`:
 * the archive arrives as the request body, is kept in a temporary file, and
 * goes through the same checks, upload, signature and submit (deploy.ts).
 */
import { createWriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { type Capability, decodeCertificate, machineName } from '../../keys/index.ts'
import { CodedError, errorMessage, list, parseCommand, UsageError } from '../../lib/index.ts'
import { MAX_MACHINE_HISTORY } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError } from '../client.ts'
import { actorNames, auditLog, verifyAndRemember } from '../commands/audit.ts'
import { checkArchiveFile, uploadArchive } from '../commands/deploy.ts'
import { DEPLOY_COMMAND, DEPLOY_USAGE, deploySettings } from '../commands/deploy-options.ts'
import { DeployTargetError, parseTargets } from '../commands/deploy-targets.ts'
import { randomId, submitRollout } from '../commands/rollout.ts'
import { fileSource } from '../upload.ts'
import type { UiEvents } from './events.ts'

export interface ApiReply {
  status: number
  body: unknown
}

/** Who the page acts as, and what it may offer. */
export interface UiSession {
  fleetId: string
  admin: string
  capabilities: Capability[]
  /** Deploy and rollout control: every link of the chain grants deploy. */
  canDeploy: boolean
}

const AUDIT_SHOWN = 100
const ROLLOUT_ID = /^[0-9a-f]{32}$/
/** Refusals of this admin's authority: the page shows them as "not permitted". */
const FORBIDDEN = new Set(['capability-missing', 'out-of-scope', 'revoked', 'expired', 'not-yet-valid'])

const reply = (status: number, body: unknown): ApiReply => ({ status, body })
const refuse = (status: number, code: string, message: string): ApiReply =>
  reply(status, { error: { code, message } })

export class UiApi {
  readonly session: UiSession
  readonly #client: AdminClient
  readonly #events: UiEvents

  constructor(client: AdminClient, events: UiEvents) {
    this.#client = client
    this.#events = events
    const chain = client.home.chain.map(decodeCertificate)
    const leaf = chain.at(-1)
    const has = (cap: Capability) => chain.length > 0 && chain.every((c) => c.capabilities.includes(cap))
    this.session = {
      fleetId: client.home.fleet.fleetId,
      admin: leaf?.name ?? 'unknown',
      capabilities: [...(leaf?.capabilities ?? [])],
      canDeploy: has('deploy'),
    }
  }

  /** Answers one request under /api/; errors become a status and `{ error: { code, message } }`. */
  async handle(req: IncomingMessage, url: URL): Promise<ApiReply> {
    try {
      return await this.#route(req, url)
    } catch (err) {
      if (err instanceof UsageError || err instanceof DeployTargetError)
        return refuse(400, 'bad-request', err.message)
      if (err instanceof AdminRequestError) {
        if (err.code === 'unreachable') return refuse(502, err.code, err.message)
        if (FORBIDDEN.has(err.code)) return refuse(403, err.code, err.message)
        if (err.code.startsWith('unknown-')) return refuse(404, err.code, err.message)
        return refuse(400, err.code, err.message)
      }
      if (err instanceof CodedError) return refuse(400, String(err.code), err.message)
      return refuse(500, 'internal', errorMessage(err))
    }
  }

  async #route(req: IncomingMessage, url: URL): Promise<ApiReply> {
    const parts = url.pathname.split('/').slice(2).map(decodeURIComponent)
    const get = req.method === 'GET'
    const post = req.method === 'POST'
    const [what, id, sub] = parts
    if (get && what === 'session' && parts.length === 1) return reply(200, this.session)
    if (get && what === 'machines' && parts.length === 1) return reply(200, this.#events.machines)
    if (get && what === 'machines' && id !== undefined && parts.length === 3) {
      if (!machineName.safeParse(id).success) return refuse(400, 'bad-request', `"${id}" is no machine name`)
      if (sub === 'log') return reply(200, await this.#client.machineLog(id))
      if (sub === 'history') return reply(200, await this.#client.machineHistory(id, MAX_MACHINE_HISTORY))
      if (sub === 'doctor') return reply(200, await this.#client.doctor(id))
    }
    if (get && what === 'rollouts' && parts.length === 1)
      return reply(200, await this.#client.rolloutList(50))
    if (what === 'rollouts' && id !== undefined && ROLLOUT_ID.test(id)) {
      if (get && parts.length === 2) return reply(200, await this.#client.rolloutShow(id))
      if (post && parts.length === 3 && (sub === 'pause' || sub === 'resume' || sub === 'abort')) {
        if (!this.session.canDeploy) return this.#notPermitted(`${sub} a rollout`)
        const view = await this.#client.rolloutControl(id, sub)
        this.#events.refreshRollouts()
        return reply(200, view)
      }
    }
    if (get && what === 'audit' && parts.length === 1) return reply(200, await this.#audit())
    if (post && what === 'deploy' && parts.length === 1) {
      if (!this.session.canDeploy) return this.#notPermitted('deploy')
      return reply(200, await this.#deploy(req, url.searchParams))
    }
    return refuse(404, 'not-found', `no endpoint ${req.method} ${url.pathname}`)
  }

  #notPermitted(what: string): ApiReply {
    return refuse(
      403,
      'capability-missing',
      `your certificate ("${this.session.admin}") does not grant "deploy" on every link, so you cannot ${what}; ask an admin of the fleet for one that does`,
    )
  }

  /** The newest records, checked the way `fleetmesh audit --verify` checks the whole log. */
  async #audit(): Promise<unknown> {
    const client = this.#client
    const records = await auditLog(client)
    const { verdict } = await verifyAndRemember(client.home, records)
    const names = actorNames(records)
    return {
      verified: verdict,
      total: records.length,
      records: records
        .slice(-AUDIT_SHOWN)
        .reverse()
        .map((r) => ({
          index: r.index,
          at: r.at,
          outcome: r.outcome,
          action: r.action,
          actor:
            r.actor === null ? `peer …${r.peerId.slice(-8)}` : (names.get(r.actor) ?? r.actor.slice(0, 12)),
          detail: r.detail,
        })),
    }
  }

  /**
   * `deploy <body> --to <to> --no-watch` with the optional generation and
   * health check, parsed by deploy's own option parser so every value is
   * checked with the same rules and messages.
   */
  async #deploy(req: IncomingMessage, q: URLSearchParams): Promise<unknown> {
    const name = q.get('name') ?? 'archive.tar.gz'
    const argv = ['--to', q.get('to') ?? '', '--no-watch', '--json']
    for (const key of ['generation', 'health-check']) if (q.get(key)) argv.push(`--${key}`, q.get(key) ?? '')
    const dir = await mkdtemp(join(tmpdir(), 'fleetmesh-ui-'))
    try {
      const file = join(dir, name.replace(/[^A-Za-z0-9._+-]/g, '-'))
      const p = parseCommand([file, ...argv], DEPLOY_COMMAND)
      const request = parseTargets(list(p, 'to'), false, DEPLOY_USAGE)
      const settings = deploySettings(p)
      await pipeline(req, createWriteStream(file, { mode: 0o600 }))
      await checkArchiveFile(file)
      const archive = await fileSource(file)
      const manifest = await uploadArchive(this.#client, { name, archive, request, settings, urls: [] })
      const submitted = await submitRollout(this.#client, randomId(), [manifest])
      if (submitted.lost !== undefined)
        throw new AdminRequestError(
          'unreachable',
          `lost the coordinator while rollout ${submitted.rolloutId} was being submitted: ${errorMessage(submitted.lost)}`,
        )
      this.#events.refreshRollouts()
      return {
        rolloutId: submitted.rolloutId,
        generation: manifest.generation,
        machines: submitted.results.flatMap((r) => r.machines),
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
}
