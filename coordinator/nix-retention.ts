/**
 * Retention for the Nix binary cache: it keeps what any recent manifest
 * references. A collection deletes the narinfos outside the closures of every
 * machine's desired manifest and of the newest `keepManifests` manifests,
 * unless an admin pushed or asked about them within the grace period (a push
 * for a deploy not yet submitted), and then the NAR blobs no remaining narinfo
 * and no archive manifest uses.
 *
 * The narinfo part is one store transaction, so a push cannot slip between the
 * liveness check and the delete. The blob part follows it: a NAR uploaded
 * again in the instant between the two is deleted, and the next `nix-missing`
 * reports its path as missing, so the next push repairs it.
 *
 * @example
 *
 * ```ts
 * const retention = new NixRetention({ store, blobs, log })
 * const timer = retention.every(3_600_000)
 * await retention.collect(Date.now())   // tests pass their own clock
 * await timer.stop()
 * ```
 */
import { errorMessage } from '../lib/index.ts'
import { nixStorePaths, openManifest, type Payload } from '../protocol/index.ts'
import type { BlobStore } from './blobs.ts'
import type { FleetStore, ManifestRecord } from './store.ts'

export const DEFAULT_KEEP_MANIFESTS = 20
export const DEFAULT_GRACE_MS = 24 * 3_600_000
/** How often the daemon collects. */
export const COLLECT_INTERVAL_MS = 3_600_000

export interface NixRetentionInit {
  store: FleetStore
  blobs: BlobStore
  /** The newest manifests whose closures are kept, besides every machine's desired one. */
  keepManifests?: number
  /** Paths pushed or asked about within this long are kept whatever references them. */
  graceMs?: number
  log?: (msg: string) => void
}

export interface Collection {
  /** Store paths whose closures were kept */
  roots: string[]
  /** Store paths whose narinfos were deleted */
  deleted: string[]
  /** NAR blobs deleted */
  deletedNars: string[]
}

/** A running periodic collection; stop() waits for one in progress. */
export interface CollectionTimer {
  stop(): Promise<void>
}

export class NixRetention {
  readonly keepManifests: number
  readonly graceMs: number
  readonly #init: NixRetentionInit
  /** Manifests never change, so each envelope is opened once. */
  readonly #payloads = new Map<string, Payload>()

  constructor(init: NixRetentionInit) {
    this.#init = init
    this.keepManifests = init.keepManifests ?? DEFAULT_KEEP_MANIFESTS
    this.graceMs = init.graceMs ?? DEFAULT_GRACE_MS
    if (!Number.isSafeInteger(this.keepManifests) || this.keepManifests < 0)
      throw new RangeError(`keepManifests must be a whole number ≥ 0, got ${this.keepManifests}`)
    if (!Number.isFinite(this.graceMs) || this.graceMs < 0)
      throw new RangeError(`graceMs must be ≥ 0, got ${this.graceMs}`)
  }

  /** One collection as of `now`. */
  async collect(now: number): Promise<Collection> {
    const { store, blobs } = this.#init
    const roots = await this.#roots()
    const { deleted, orphanedNars } = await store.collectNarInfos(roots, now - this.graceMs)
    const archives = orphanedNars.length > 0 ? await this.#archiveBlobs() : new Set<string>()
    const deletedNars: string[] = []
    for (const nar of orphanedNars) {
      if (archives.has(nar)) continue
      if (await blobs.remove(nar)) deletedNars.push(nar)
    }
    return { roots, deleted, deletedNars }
  }

  /** Collects every `intervalMs` on an unref'd timer (it never keeps the process alive). */
  every(intervalMs: number, clock: () => number = Date.now): CollectionTimer {
    const log = this.#init.log ?? (() => {})
    let running: Promise<void> | undefined
    const run = (): void => {
      if (running !== undefined) return
      running = this.collect(clock())
        .then((c) => {
          if (c.deleted.length > 0)
            log(`nix cache: deleted ${c.deleted.length} unreferenced paths and ${c.deletedNars.length} NARs`)
        })
        .catch((err: unknown) =>
          log(
            `nix cache: retention failed, tried again in ${Math.round(intervalMs / 60_000)} min: ${errorMessage(err)}`,
          ),
        )
        .finally(() => {
          running = undefined
        })
    }
    const timer = setInterval(run, intervalMs)
    timer.unref()
    return {
      async stop() {
        clearInterval(timer)
        await running
      },
    }
  }

  /** The store paths of every machine's desired manifest and of the newest ones. */
  async #roots(): Promise<string[]> {
    const { store } = this.#init
    const manifests = new Map<string, ManifestRecord>()
    for (const m of await store.listManifests(this.keepManifests)) manifests.set(m.id, m)
    for (const machine of await store.listMachines()) {
      const desired = await store.getDesired(machine.name)
      if (desired !== undefined) manifests.set(desired.id, desired)
    }
    const roots = new Set<string>()
    for (const m of manifests.values()) {
      const payload = this.#payload(m)
      if (payload.kind === 'nix') for (const path of nixStorePaths(payload)) roots.add(path)
    }
    return [...roots].sort()
  }

  /** Blobs an archive manifest, any stored one, names. */
  async #archiveBlobs(): Promise<Set<string>> {
    const out = new Set<string>()
    for (const m of await this.#init.store.listManifests(Number.MAX_SAFE_INTEGER)) {
      const payload = this.#payload(m)
      if (payload.kind === 'archive') out.add(payload.sha256)
    }
    return out
  }

  /**
   * The manifest's payload. The coordinator admitted the envelope, so it opens;
   * if it does not, the collection stops rather than guess what it references.
   */
  #payload(m: ManifestRecord): Payload {
    let payload = this.#payloads.get(m.id)
    if (payload === undefined) {
      payload = openManifest(m.envelope).value.payload
      this.#payloads.set(m.id, payload)
    }
    return payload
  }
}
