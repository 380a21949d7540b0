/**
 * What the updater needs from an activator: the contract every activation mode
 * implements. Activators turn a verified manifest into a running generation. The
 * updater drives them through fetch → prepare → switchTo → activate and, on
 * failure, switchTo(previous) → activate(previous); every method must be safe to
 * call again after a crash part-way through it.
 *
 * Two implementations: `profile` (profile-activator.ts) unpacks archives on any
 * Linux box, `nixos` (nixos-activator.ts) installs NixOS system closures with the
 * local Nix. Another mode plugs in beside them by implementing {@link Activator}
 * and throwing {@link ActivatorError} with one of its codes. An activation's
 * output and whether it needs a reboot ({@link ActivationResult}), and lines
 * logged while fetching, end up in the update log of the status reports; what an
 * activation prints also goes out live as it prints it (update-log-stream.ts).
 */
import { z } from 'zod'
import { CodedError } from '../lib/index.ts'
import { ACTIVATION_MODES, type Manifest } from '../protocol/index.ts'

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
  /**
   * How the update that prepared it activates it (nixos: switch, boot or test).
   * Only a generation being installed carries it; one read back from disk does
   * not, so a rollback activates the old generation the way the update that is
   * being undone was activated.
   */
  activation?: ActivationMode
}

export type ActivationMode = Manifest['activation']

export const generationInfoSchema = z.strictObject({
  id: z.string().min(1).max(256),
  name: z.string().min(1).max(128),
  path: z.string().min(1).max(4096),
  manifestId: z.string().max(64).nullable(),
  // Optional: update.json files written before it existed must still load.
  activation: z.enum(ACTIVATION_MODES).optional(),
})

export interface FetchProgress {
  done: number
  total: number
}

/** Takes a running command's output as it comes; `line` writes one line of its own (the command). */
export interface LiveOutput {
  write(text: string): void
  line(text: string): void
}

/** What an activation leaves for the update log. */
export interface ActivationResult {
  /** What the activation printed (bounded), for the operator. */
  log?: string
  /** The generation is installed but takes effect only after a reboot (NixOS `boot`). */
  rebootRequired?: boolean
}

export interface Activator {
  /** Which activation modes it handles, e.g. 'profile'. */
  readonly kind: string
  /**
   * Downloads the payload and verifies it against the manifest. Resumes a
   * previous partial download. Resolves with the local path of the verified artifact.
   * `log` takes lines for the update log (what was fetched, from where).
   */
  fetch(
    manifest: Manifest,
    onProgress: (progress: FetchProgress) => void,
    signal: AbortSignal,
    log?: (line: string) => void,
  ): Promise<string>
  /**
   * Makes a complete, not yet active generation from a verified artifact. Idempotent
   * per manifest: called again after a crash it returns the generation it made before.
   */
  prepare(manifest: Manifest, artifactPath: string): Promise<GenerationInfo>
  /** Atomically makes `gen` the current generation; null leaves no generation current. */
  switchTo(gen: GenerationInfo | null): Promise<void>
  /**
   * Runs the generation's activation (services, hooks); `previous` is the one being
   * left. A failure is an {@link ActivatorError} whose `log` holds the output.
   * `live` takes what the activation prints as it prints it (the live update log),
   * after a line naming the command.
   */
  activate(gen: GenerationInfo, previous: GenerationInfo | null, live?: LiveOutput): Promise<ActivationResult>
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
  /** The nixos activator runs on a device without Nix. */
  | 'nix-unavailable'
  /** A path of the closure is unsigned, or signed by no key the manifest trusts. */
  | 'untrusted-path'
  /** Not enough disk space for the download or the unpacked closure. */
  | 'no-space'
  /** Nix could not substitute the closure. */
  | 'realise-failed'
  /** A nix manifest's closure map has no closure for this machine. */
  | 'not-in-closure-map'

/**
 * A step of an activator (or a blob fetcher working for one) failed; the updater
 * reports the code as the update's error code.
 */
export class ActivatorError extends CodedError<ActivatorErrorCode> {
  override name = 'ActivatorError'
  /** Output for the update log, e.g. what a failed activation printed. */
  readonly log: string | undefined
  constructor(code: ActivatorErrorCode, message: string, options?: ErrorOptions & { log?: string }) {
    super(code, message, options)
    this.log = options?.log
  }
}
