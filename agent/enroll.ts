/**
 * First contact: the agent presents its enrollment token to the coordinator named
 * in the token, over a connection authenticated as that coordinator's peer id,
 * and on success stores what it needs to operate: the pinned fleet root, its
 * machine name and tags, and where the coordinator is. The tags change later
 * only by a tag record an admin signed (`Enrollment.takeTags`).
 */

import { existsSync } from 'node:fs'
import { hostname } from 'node:os'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import {
  type EnrollmentToken,
  loadOrCreateIdentity,
  machineName,
  type PrivateKey,
  parseToken,
  tagName,
  verifyToken,
} from '../keys/index.ts'
import {
  CodedError,
  errorMessage,
  PersistError,
  readJsonIfExists,
  toBase64Url,
  writeJsonAtomic,
} from '../lib/index.ts'
import { type FleetHost, openStream } from '../net/index.ts'
import {
  type AdmittedMachineTags,
  decodeMessage,
  encodeMessage,
  enrollRequestSchema,
  enrollResponseSchema,
  FramedStream,
  openMachineTags,
  PROTOCOLS,
} from '../protocol/index.ts'
import { type TrustContext, verifyMachineTags } from './verify.ts'

export class EnrollmentError extends CodedError<string> {
  override name = 'EnrollmentError'
}

export const enrollmentFileSchema = z.strictObject({
  fleetId: z.string().min(1).max(128),
  fleetRoot: z.string().length(43),
  machine: machineName,
  tags: z.array(tagName),
  /** The version of the signed tag record the tags come from; absent: the enrollment token's. */
  tagsVersion: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  coordinator: z.strictObject({ peerId: z.string().max(128), addrs: z.array(z.string().max(512)).max(16) }),
  enrolledAt: z.number().int(),
})
export type EnrollmentFile = z.infer<typeof enrollmentFileSchema>

/** Checks a token locally before any network traffic, so a typo fails fast with a clear message. */
export function checkToken(text: string): EnrollmentToken {
  const token = parseToken(text)
  // The token carries the root it asks us to pin; it must at least be self-consistent.
  verifyToken(token, { root: token.fleetRoot })
  return token
}

/**
 * Enrolls through the token's coordinator (at `addrsOverride` if given) and,
 * while one cannot be reached, through each of the fleet's other coordinators
 * the token names: any of them accepts it, once (the token's nonce is used
 * once fleet-wide). Any answer other than "unreachable" ends the tries.
 */
export async function enrollWithCoordinator(
  host: FleetHost,
  token: EnrollmentToken,
  file: string,
  addrsOverride: string[] = [],
  log: (msg: string) => void = () => {},
): Promise<EnrollmentFile> {
  const first = addrsOverride.length > 0 ? { ...token.coordinator, addrs: addrsOverride } : token.coordinator
  const targets = [first, ...token.others]
  const unreachable: EnrollmentError[] = []
  for (const [i, target] of targets.entries()) {
    try {
      return await enrollAt(host, token, file, target)
    } catch (err) {
      if (!(err instanceof EnrollmentError && err.code === 'unreachable')) throw err
      unreachable.push(err)
      if (i + 1 < targets.length) log(`${err.message}; trying the next coordinator the token names`)
    }
  }
  if (unreachable.length === 1) throw unreachable[0]
  throw new EnrollmentError('unreachable', unreachable.map((e) => e.message).join('; '))
}

/** Enrolls through one coordinator, at `target.addrs`. */
export async function enrollAt(
  host: FleetHost,
  token: EnrollmentToken,
  file: string,
  target: { peerId: string; addrs: readonly string[] },
): Promise<EnrollmentFile> {
  let coordinator: PeerId
  let addrs: Multiaddr[]
  try {
    coordinator = peerIdFromString(target.peerId)
    addrs = target.addrs.map((a) => multiaddr(a))
  } catch (err) {
    // signed by the admin, but not what this version reads: the next coordinator the token names, if any
    throw new EnrollmentError(
      'unreachable',
      `cannot dial coordinator ${target.peerId}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    )
  }
  if (addrs.length > 0) await host.peerStore.merge(coordinator, { multiaddrs: addrs })
  let stream: Awaited<ReturnType<FleetHost['dialProtocol']>>
  try {
    stream = await openStream(host, coordinator, PROTOCOLS.enroll, { signal: AbortSignal.timeout(30_000) })
  } catch (err) {
    throw new EnrollmentError(
      'unreachable',
      `cannot reach coordinator ${coordinator} at ${addrs.join(', ') || '(no address)'}: ${errorMessage(err)}`,
      { cause: err },
    )
  }
  const fs = new FramedStream(stream, { maxFrameBytes: 64 * 1024 })
  await fs.send(
    encodeMessage(enrollRequestSchema, {
      t: 'enroll',
      token: token.text,
      facts: { hostname: hostname().slice(0, 1000), arch: process.arch, platform: process.platform },
    }),
  )
  const response = decodeMessage(
    enrollResponseSchema,
    await fs.readOne({ timeoutMs: 30_000 }),
    'enroll response',
    64 * 1024,
  )
  await fs.close().catch(() => {})
  if (!response.ok)
    throw new EnrollmentError(
      response.error.code,
      `coordinator refused enrollment: ${response.error.message}`,
    )
  if (toBase64Url(response.fleetRoot) !== token.fleetRoot.toString()) {
    throw new EnrollmentError(
      'wrong-root',
      'coordinator reports a different fleet root than the token; refusing to pin it',
    )
  }
  const record: EnrollmentFile = {
    fleetId: response.fleetId,
    fleetRoot: token.fleetRoot.toString(),
    machine: response.machine,
    tags: token.tags,
    coordinator: { peerId: target.peerId, addrs: addrs.map((a) => a.toString()) },
    enrolledAt: Date.now(),
  }
  await writeJsonAtomic(file, record, 0o600)
  return record
}

/** Reads the enrollment file; undefined when there is none, i.e. the machine is not enrolled yet. */
export async function readEnrollmentFile(file: string): Promise<EnrollmentFile | undefined> {
  try {
    return await readJsonIfExists(file, enrollmentFileSchema)
  } catch (err) {
    if (!(err instanceof PersistError)) throw err
    if (err.code === 'unreadable') {
      const advice = 'check its owner and permissions: the agent must be able to read its state directory'
      throw new EnrollmentError('unreadable', `${err.message}; ${advice}`, { cause: err })
    }
    // For a file that is not JSON lib's message already says "fix it or move it aside".
    const advice =
      err.code === 'corrupt'
        ? 'if you move it aside, the agent has to enroll again with --token'
        : 'fix it, or move it aside and enroll again with --token'
    throw new EnrollmentError('corrupt', `${err.message}; ${advice}`, { cause: err })
  }
}

/**
 * The enrollment as it stands. Its tags decide which manifests this machine
 * takes, so they change only by a signed tag record that passes the same rules
 * the coordinator ran (verifyMachineTags), and the new tags and the record's
 * version reach enrollment.json atomically before anything uses them.
 */
export class Enrollment {
  readonly #file: string
  #current: EnrollmentFile

  constructor(file: string, current: EnrollmentFile) {
    this.#file = file
    this.#current = current
  }

  get current(): EnrollmentFile {
    return this.#current
  }

  /**
   * Takes a tag record: 'current' when it is the one already taken (the
   * coordinator sends the latest on every connect). Throws
   * MachineTagsRefusedError, leaving the tags as they were, when a rule fails.
   */
  async takeTags(
    envelope: Uint8Array,
    trust: Omit<TrustContext, 'machine' | 'tags'>,
  ): Promise<AdmittedMachineTags | 'current'> {
    const now = this.#current
    const version = now.tagsVersion ?? 0
    const { value } = openMachineTags(envelope)
    if (value.version === version && value.tags.join() === now.tags.join()) return 'current'
    const admitted = verifyMachineTags(envelope, {
      ...trust,
      machine: now.machine,
      tags: now.tags,
      tagsVersion: version,
    })
    const next: EnrollmentFile = { ...now, tags: admitted.record.tags, tagsVersion: admitted.record.version }
    await writeJsonAtomic(this.#file, next, 0o600)
    this.#current = next
    return admitted
  }
}

/**
 * The agent's key. A new one is made only before enrollment: an enrolled
 * machine is known to the coordinator by its key, so a silently new key would
 * be refused as not enrolled while the machine's name stays bound to the lost
 * one. That is damage to report, not a state to reset.
 */
export async function agentIdentity(keyPath: string, enrollmentPath: string): Promise<PrivateKey> {
  if (!existsSync(keyPath) && existsSync(enrollmentPath)) {
    throw new EnrollmentError(
      'identity-missing',
      `${enrollmentPath} says this device is enrolled, but its key ${keyPath} is missing. ` +
        'Restore identity.key from a backup of this state directory; if it is lost for good, ' +
        'move enrollment.json aside and enroll again with a new token (an admin must free the old name first).',
    )
  }
  return loadOrCreateIdentity(keyPath)
}
