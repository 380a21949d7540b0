/**
 * Which coordinators serve a fleet: a list signed by the fleet root key
 * (domain `coordinatorList`), so that nobody but the holder of the root, which
 * also certifies every admin, can add a coordinator. Each entry is a
 * coordinator's libp2p identity (its peer id, which is its Ed25519 public key)
 * and where it listens. A newer list has a higher version; holders keep the
 * highest they have verified and never go back.
 *
 * What it is used for: admins reach any listed coordinator (admin/client.ts)
 * and verify the audit log against the set of listed coordinator keys, since
 * each coordinator signs the records it appends; a coordinator accepts an
 * enrollment token made for any listed coordinator. Agents verify admin
 * signatures end to end whichever coordinator carries them, so the list gives
 * a coordinator no authority over machines; it only says whom to talk to.
 *
 * @example
 *
 * ```ts
 * const envelope = signCoordinatorList(rootKey, { fleetId: 'acme', version: 2, issuedAt: Date.now(), coordinators })
 * const list = openCoordinatorList(envelope, { fleetRoot: rootKey.publicKey, fleetId: 'acme' })
 * ```
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { DOMAINS, type PrivateKey, type PublicKey } from '../keys/index.ts'
import { CodedError, fileSize, writeFileAtomic } from '../lib/index.ts'
import { EnvelopeError, openEnvelope, sealEnvelope } from './envelope.ts'
import { MAX_ENVELOPE_BYTES } from './messages.ts'

export const coordinatorEntrySchema = z.strictObject({
  peerId: z.string().min(1).max(128),
  addrs: z.array(z.string().min(1).max(512)).max(16),
})
export type CoordinatorEntry = z.infer<typeof coordinatorEntrySchema>

export const coordinatorListSchema = z.strictObject({
  fleetId: z.string().min(1).max(128),
  version: z.number().int().positive(),
  issuedAt: z.number().int().nonnegative(),
  coordinators: z.array(coordinatorEntrySchema).min(1).max(64),
})
export type CoordinatorList = z.infer<typeof coordinatorListSchema>

/**
 * An agent that names this capability in its control hello gets the signed list
 * as a `coordinators` frame after the coordinator's hello, and again whenever a
 * newer one is stored. It verifies it against the fleet root it pinned at
 * enrollment (openCoordinatorList), keeps the highest version, and may dial any
 * listed coordinator when its own is gone. Agents without it never get the frame.
 */
export const COORDINATOR_LIST_CAPABILITY = 'coordinator-list'

/** The file both an admin home and a coordinator state directory keep the newest signed list in. */
export const COORDINATOR_LIST_FILE = 'coordinators.list'

export class CoordinatorListError extends CodedError<'malformed' | 'not-root' | 'wrong-fleet' | 'duplicate'> {
  override name = 'CoordinatorListError'
}

export function signCoordinatorList(root: PrivateKey, list: CoordinatorList): Uint8Array {
  return sealEnvelope(coordinatorListSchema, DOMAINS.coordinatorList, list, root)
}

/** The list in `envelope`, if the fleet root signed it for this fleet; else a CoordinatorListError. */
export function openCoordinatorList(
  envelope: Uint8Array,
  fleet: { fleetRoot: PublicKey; fleetId: string },
): CoordinatorList {
  let opened: ReturnType<typeof openEnvelope<typeof coordinatorListSchema>>
  try {
    opened = openEnvelope(coordinatorListSchema, DOMAINS.coordinatorList, envelope)
  } catch (err) {
    if (!(err instanceof EnvelopeError)) throw err
    throw new CoordinatorListError('malformed', `the coordinator list does not open: ${err.message}`, {
      cause: err,
    })
  }
  if (!opened.signer.equals(fleet.fleetRoot) || opened.chain.length > 0)
    throw new CoordinatorListError(
      'not-root',
      `the coordinator list is signed by ${opened.signer}, not by the fleet root ${fleet.fleetRoot}`,
    )
  const list = opened.value
  if (list.fleetId !== fleet.fleetId)
    throw new CoordinatorListError(
      'wrong-fleet',
      `the coordinator list is for fleet "${list.fleetId}", not "${fleet.fleetId}"`,
    )
  const ids = new Set(list.coordinators.map((c) => c.peerId))
  if (ids.size !== list.coordinators.length)
    throw new CoordinatorListError('duplicate', 'the coordinator list names a coordinator twice')
  return list
}

export interface StoredCoordinatorList {
  list: CoordinatorList
  /** The envelope exactly as the fleet root signed it. */
  envelope: Uint8Array
}

/**
 * The verified list an admin home or a coordinator state directory keeps in
 * COORDINATOR_LIST_FILE; undefined when there is none (a fleet made before the
 * list existed); a list that does not verify, or a file larger than any
 * signed list can be (not read), throws, naming the file.
 */
export async function readCoordinatorList(
  dir: string,
  fleet: { fleetRoot: PublicKey; fleetId: string },
): Promise<StoredCoordinatorList | undefined> {
  const file = join(dir, COORDINATOR_LIST_FILE)
  const size = await fileSize(file)
  if (size === undefined) return undefined
  if (size > MAX_ENVELOPE_BYTES)
    throw new CoordinatorListError(
      'malformed',
      `${file}: it is ${size} bytes, more than a signed list can be (${MAX_ENVELOPE_BYTES})`,
    )
  let envelope: Uint8Array
  try {
    envelope = new Uint8Array(await readFile(file))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    return { list: openCoordinatorList(envelope, fleet), envelope }
  } catch (err) {
    if (!(err instanceof CoordinatorListError)) throw err
    throw new CoordinatorListError(
      err.code,
      `${file}: ${err.message}; copy it again from the fleet root's machine`,
      {
        cause: err,
      },
    )
  }
}

export async function writeCoordinatorList(dir: string, envelope: Uint8Array): Promise<void> {
  await writeFileAtomic(join(dir, COORDINATOR_LIST_FILE), envelope, 0o644)
}
