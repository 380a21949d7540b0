/**
 * Coordinators of one fleet on one database must share their blob directory
 * (`--blobs` on a shared filesystem): a manifest submitted through one names an
 * archive that every other one serves to its own agents, and the database
 * holds no blobs. A directory that is not the shared one shows as an archive
 * that a stored manifest names and that is not here. The coordinator says so
 * when it starts (over the newest manifests) and when another coordinator
 * stores a manifest, so the operator hears of it before an agent's update
 * fails for the missing blob.
 *
 * Nix closures are not checked here: their NARs are looked up path by path
 * when an agent asks (nix-cache.ts), and a path whose NAR is not in the
 * directory counts as missing from the cache.
 */
import { openManifest } from '../protocol/index.ts'
import type { BlobStore } from './blobs.ts'
import type { FleetStore, ManifestRecord } from './store.ts'

/** How many of the newest manifests a coordinator checks when it starts. */
export const CHECKED_AT_START = 20

/** The archive `manifest` names, if it has one and `blobs` lacks it. */
export async function missingArchive(
  manifest: ManifestRecord,
  blobs: Pick<BlobStore, 'size'>,
): Promise<string | undefined> {
  // the coordinator admitted this envelope, so it opens; a stored manifest is never re-checked here
  const { payload } = openManifest(manifest.envelope).value
  if (payload.kind !== 'archive') return undefined
  return (await blobs.size(payload.sha256)) === undefined ? payload.sha256 : undefined
}

/** What the operator reads: which manifest, which archive (and how many more), which directory, what to do. */
export function unsharedBlobsMessage(
  dir: string,
  first: { manifest: string; sha256: string },
  more = 0,
): string {
  const others = more > 0 ? ` (and ${more} more of the newest manifests)` : ''
  return (
    `blobs: manifest ${first.manifest} names archive ${first.sha256}, which is not in this coordinator's ` +
    `blob directory ${dir}${others}. Coordinators of one fleet must share --blobs (a shared filesystem); ` +
    'until they do, agents on this coordinator fail updates that need it'
  )
}

/** At start, on a shared store: the newest manifests' archives, each looked for in `blobs`. */
export async function checkSharedBlobs(
  store: Pick<FleetStore, 'listManifests'>,
  blobs: Pick<BlobStore, 'size' | 'dir'>,
  log: (msg: string) => void,
): Promise<void> {
  const missing: { manifest: string; sha256: string }[] = []
  for (const m of await store.listManifests(CHECKED_AT_START)) {
    const sha256 = await missingArchive(m, blobs)
    if (sha256 !== undefined) missing.push({ manifest: m.id, sha256 })
  }
  const [first, ...rest] = missing
  if (first !== undefined) log(unsharedBlobsMessage(blobs.dir, first, rest.length))
}
