/**
 * What the updater needs from an activator: the contract every activation mode
 * implements. Activators turn a verified manifest into a running generation. The
 * updater drives them through fetch → prepare → switchTo → activate and, on
 * failure, switchTo(previous) → activate(previous); every method must be safe to
 * call again after a crash part-way through it.
 *
 * The `profile` activator (profile-activator.ts) is one implementation; another
 * mode plugs in beside it by implementing {@link Activator} and throwing
 * {@link ActivatorError} with one of its codes.
 */
import { z } from 'zod'
import { CodedError } from '../lib/index.ts'
import type { Manifest } from '../protocol/index.ts'

/** One installed generation, as an activator identifies it. Persisted in update.json. */
export interface GenerationInfo {
  /** Unique within the activator and stable across restarts, e.g. "7-web-2026.11.23". */
  id: string
  /** The manifest's generation name. */
  name: string
  /** Absolute path of the generation (a directory for profile; a store path for nixos). */
  path: string
  /** The manifest that produced it, when known. */
  manifestId: string | null
}

export const generationInfoSchema = z.strictObject({
  id: z.string().min(1).max(256),
  name: z.string().min(1).max(128),
  path: z.string().min(1).max(4096),
  manifestId: z.string().max(64).nullable(),
})

export interface FetchProgress {
  done: number
  total: number
}

export interface Activator {
  /** Which activation modes it handles, e.g. 'profile'. */
  readonly kind: string
  /**
   * Downloads the payload and verifies it against the manifest. Resumes a
   * previous partial download. Resolves with the local path of the verified artifact.
   */
  fetch(
    manifest: Manifest,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
  ): Promise<string>
  /**
   * Makes a complete, not yet active generation from a verified artifact. Idempotent
   * per manifest: called again after a crash it returns the generation it made before.
   */
  prepare(manifest: Manifest, artifactPath: string): Promise<GenerationInfo>
  /** Atomically makes `gen` the current generation; null leaves no generation current. */
  switchTo(gen: GenerationInfo | null): Promise<void>
  /** Runs the generation's activation (services, hooks); `previous` is the one being left. */
  activate(gen: GenerationInfo, previous: GenerationInfo | null): Promise<void>
  current(): Promise<GenerationInfo | null>
  /** Installed generations, oldest first. */
  list(): Promise<GenerationInfo[]>
  /** The newest installed generation older than `gen`, for a manual rollback. */
  previousOf(gen: GenerationInfo): Promise<GenerationInfo | null>
  /**
   * Deletes all but the newest `keep` generations, never the current one nor any in
   * `protect`, plus leftovers of interrupted work. Resolves with the deleted ids.
   */
  gc(keep: number, protect: readonly GenerationInfo[]): Promise<string[]>
}

export type ActivatorErrorCode =
  | 'unsupported-payload'
  | 'download-failed'
  | 'artifact-mismatch'
  | 'bad-archive'
  | 'unsafe-archive'
  | 'prepare-failed'
  | 'switch-failed'
  | 'activation-failed'

/**
 * A step of an activator (or a blob fetcher working for one) failed; the updater
 * reports the code as the update's error code.
 */
export class ActivatorError extends CodedError<ActivatorErrorCode> {
  override name = 'ActivatorError'
}
