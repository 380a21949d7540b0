/**
 * The admin CLI's connection to the coordinator: a short-lived libp2p host with
 * the admin's own key, one stream per signed request.
 */

import { randomBytes } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { z } from 'zod'
import { DOMAINS } from '../keys/index.ts'
import { CodedError, describeIssues } from '../lib/index.ts'
import { createHost, type FleetHost, openStream } from '../net/index.ts'
import {
  type AdminOp,
  type AdminResponse,
  adminRequestSchema,
  adminResponseSchema,
  decodeMessage,
  FramedStream,
  PROTOCOLS,
  sealEnvelope,
} from '../protocol/index.ts'
import type { AdminHome } from './home.ts'

export const UPLOAD_CHUNK_BYTES = 256 * 1024
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024

export class AdminRequestError extends CodedError<string> {
  override name = 'AdminRequestError'
}

export class AdminClient {
  readonly host: FleetHost
  readonly home: AdminHome
  readonly #coordinator: ReturnType<typeof peerIdFromString>

  private constructor(host: FleetHost, home: AdminHome) {
    this.host = host
    this.home = home
    this.#coordinator = peerIdFromString(home.fleet.coordinator.peerId)
  }

  static async connect(home: AdminHome, addrsOverride: string[] = []): Promise<AdminClient> {
    const host = await createHost({ role: 'admin', privateKey: home.key.toLibp2p(), listen: [] })
    const client = new AdminClient(host, home)
    const addrs = addrsOverride.length > 0 ? addrsOverride : home.fleet.coordinator.addrs
    await host.peerStore.merge(client.#coordinator, { multiaddrs: addrs.map((a) => multiaddr(a)) })
    return client
  }

  async close(): Promise<void> {
    await this.host.stop()
  }

  /** Opens a stream and sends one signed request; the caller reads the responses. */
  async open(op: AdminOp, timeoutMs = 30_000): Promise<FramedStream> {
    let stream: Awaited<ReturnType<FleetHost['dialProtocol']>>
    try {
      stream = await openStream(this.host, this.#coordinator, PROTOCOLS.admin, {
        signal: AbortSignal.timeout(timeoutMs),
      })
    } catch (err) {
      throw new AdminRequestError(
        'unreachable',
        `cannot reach the coordinator ${this.#coordinator} at ${this.home.fleet.coordinator.addrs.join(', ')}: ${(err as Error).message}`,
      )
    }
    const fs = new FramedStream(stream, { maxFrameBytes: Math.max(MAX_RESPONSE_BYTES, UPLOAD_CHUNK_BYTES) })
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
      MAX_RESPONSE_BYTES,
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

  async request<S extends z.ZodType>(op: AdminOp, schema: S, timeoutMs = 30_000): Promise<z.output<S>> {
    const fs = await this.open(op, timeoutMs)
    try {
      return await this.readResult(fs, schema, timeoutMs)
    } finally {
      await fs.close().catch(() => {})
    }
  }
}
