/**
 * The admin's local fleet directory ($FLEETMESH_HOME, default ~/.config/fleetmesh):
 *
 *   fleet.json    fleet id, fleet root public key, coordinator peer id and addresses
 *   admin.key     this admin's Ed25519 key (0600; never leaves this machine)
 *   admin.chain   this admin's certificate chain (root → … → this key)
 *   root.key      the fleet root key, only on the machine that ran `init`; keep it offline
 *   nix-cache.sec this admin's Nix binary cache signing key (0600), made by `fleetmesh nix keygen`
 *   nix-cache.pub its public half, "<name>:<base64>", for nix.conf's trusted-public-keys
 *   audit-head.json the newest audit record `fleetmesh audit --verify` verified (index, hash)
 *   coordinators.list the fleet root's signed list of the fleet's coordinators (protocol/coordinator-list.ts)
 *
 * Everything is validated when read, and a bad file is named in the error.
 */
import { readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { z } from 'zod'
import {
  decodeCanonical,
  encodeCanonical,
  loadIdentity,
  loadNixSigningKey,
  type NixSigningKey,
  type PrivateKey,
  PublicKey,
  type SignedCertificate,
  signedCertificateSchema,
} from '../keys/index.ts'
import {
  describeIssues,
  ensureDir,
  fileSize,
  fromBase64Url,
  PersistError,
  readJson,
  toBase64Url,
  writeFileAtomic,
  writeJsonAtomic,
} from '../lib/index.ts'
import { AddressError, checkAddresses } from '../net/index.ts'
import { type CoordinatorEntry, readCoordinatorList } from '../protocol/index.ts'

export class HomeError extends Error {
  override name = 'HomeError'
}

export const fleetFileSchema = z.strictObject({
  fleetId: z.string().min(1).max(128),
  fleetRoot: z.string().length(43),
  coordinator: z.strictObject({
    peerId: z.string().min(1).max(128),
    addrs: z.array(z.string().min(1).max(512)).max(16),
  }),
})
export type FleetFile = z.infer<typeof fleetFileSchema>

export function defaultHome(): string {
  return process.env.FLEETMESH_HOME ?? join(homedir(), '.config', 'fleetmesh')
}

export interface AdminHome {
  dir: string
  fleet: FleetFile
  fleetRoot: PublicKey
  key: PrivateKey
  chain: SignedCertificate[]
  /**
   * Every coordinator of the fleet: the fleet file's first, then the others of
   * the signed coordinator list, if the home has one.
   */
  coordinators: CoordinatorEntry[]
}

export const paths = (dir: string) => ({
  fleet: join(dir, 'fleet.json'),
  adminKey: join(dir, 'admin.key'),
  adminChain: join(dir, 'admin.chain'),
  rootKey: join(dir, 'root.key'),
  nixSecretKey: join(dir, 'nix-cache.sec'),
  nixPublicKey: join(dir, 'nix-cache.pub'),
  /** The newest audit record this admin verified, so a log cut back later fails `audit --verify`. */
  auditHead: join(dir, 'audit-head.json'),
})

/** How errors name the `index`th coordinator address of the fleet file in `dir`. */
export const fleetAddrSource = (dir: string, index: number): string =>
  `${paths(dir).fleet} coordinator.addrs[${index}]`

export async function readFleetFile(dir: string): Promise<FleetFile> {
  const file = paths(dir).fleet
  let fleet: FleetFile
  try {
    fleet = await readJson(file, fleetFileSchema)
  } catch (err) {
    if (!(err instanceof PersistError)) throw err
    if (err.code === 'missing')
      throw new HomeError(
        `no fleet configured in ${dir} (missing ${file}); run "fleetmesh init" or "fleetmesh admin install"`,
        { cause: err },
      )
    throw new HomeError(err.message, { cause: err })
  }
  // Checked here, before any command starts a host on them.
  try {
    peerIdFromString(fleet.coordinator.peerId)
  } catch (err) {
    throw new HomeError(
      `${file} coordinator.peerId "${fleet.coordinator.peerId}" is not a peer id (12D3KooW…)`,
      { cause: err },
    )
  }
  try {
    checkAddresses(fleet.coordinator.addrs, (i) => fleetAddrSource(dir, i))
  } catch (err) {
    if (err instanceof AddressError) throw new HomeError(err.message, { cause: err })
    throw err
  }
  return fleet
}

export async function writeFleetFile(dir: string, fleet: FleetFile): Promise<void> {
  await ensureDir(dir)
  await writeJsonAtomic(paths(dir).fleet, fleet, 0o644)
}

export async function writeAdminChain(dir: string, chain: readonly SignedCertificate[]): Promise<void> {
  await writeFileAtomic(paths(dir).adminChain, `${encodeChain(chain)}\n`, 0o600)
}

export function encodeChain(chain: readonly SignedCertificate[]): string {
  return toBase64Url(encodeCanonical([...chain]))
}

export function decodeChain(text: string, where: string): SignedCertificate[] {
  let value: unknown
  try {
    value = decodeCanonical(fromBase64Url(text.trim()), 64 * 1024)
  } catch (err) {
    throw new HomeError(`${where} is damaged: ${(err as Error).message}`)
  }
  const parsed = z.array(signedCertificateSchema).min(1).max(4).safeParse(value)
  if (!parsed.success)
    throw new HomeError(`${where} is not a certificate chain: ${describeIssues(parsed.error)}`)
  return parsed.data
}

export async function loadAdminHome(dir: string): Promise<AdminHome> {
  const fleet = await readFleetFile(dir)
  const p = paths(dir)
  const key = await loadIdentity(p.adminKey)
  let chainText: string
  try {
    chainText = await readFile(p.adminChain, 'utf8')
  } catch {
    throw new HomeError(
      `no admin certificate in ${p.adminChain}; ask a fleet admin to run "fleetmesh admin grant" for ${key.publicKey}`,
    )
  }
  const fleetRoot = PublicKey.parse(fleet.fleetRoot)
  const list = await readCoordinatorList(dir, { fleetRoot, fleetId: fleet.fleetId })
  return {
    dir,
    fleet,
    fleetRoot,
    key,
    chain: decodeChain(chainText, p.adminChain),
    // the fleet file's coordinator first: requests go there unless it is unreachable
    coordinators: [
      fleet.coordinator,
      ...(list?.list.coordinators ?? []).filter((c) => c.peerId !== fleet.coordinator.peerId),
    ],
  }
}

/** This admin's Nix signing key, or undefined when `fleetmesh nix keygen` has not made one yet. */
export async function loadAdminNixKey(dir: string): Promise<NixSigningKey | undefined> {
  const file = paths(dir).nixSecretKey
  if ((await fileSize(file)) === undefined) return undefined
  return loadNixSigningKey(file)
}
