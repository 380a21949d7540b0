/**
 * @packageDocumentation
 *
 * The bottom layer: generic helpers with no knowledge of fleets, keys or
 * libp2p. Typed errors ({@link CodedError}), crash-safe files
 * ({@link writeFileAtomic}, {@link readJson}), one abortable {@link sleep},
 * {@link raceSignal}, {@link backoffDelay}, SHA-256 of bytes and files, byte
 * encodings, and the command-line plumbing every role's CLI uses (daemon
 * options also from FLEETMESH_* variables and a --config JSON file).
 * Everything else in fleetmesh may import from here; this folder imports
 * nothing of fleetmesh's.
 *
 * @example
 *
 * ```ts
 * import { readJson, sleep, writeJsonAtomic } from './lib/index.ts'
 * import { z } from 'zod'
 *
 * await writeJsonAtomic('/var/lib/x/state.json', { step: 2 })      // temp + fsync + rename
 * const state = await readJson('/var/lib/x/state.json', z.object({ step: z.number() }))
 * await sleep(1_000, AbortSignal.timeout(5_000))                    // rejects with the reason on abort
 * ```
 */
export * from './backoff.ts'
export * from './batches.ts'
export * from './bytes.ts'
export * from './cli.ts'
export {
  type CompletionSource,
  CompletionSpecError,
  completionScript,
  isShell,
  SHELLS,
  type Shell,
} from './completion.ts'
export * from './config-file.ts'
export * from './config-sources.ts'
export * from './dir-lock.ts'
export * from './errors.ts'
export * from './files.ts'
export * from './hash.ts'
export * from './json.ts'
export * from './json-locate.ts'
export * from './nix-base32.ts'
export * from './process.ts'
export * from './serial.ts'
export * from './sleep.ts'
export * from './table.ts'
export * from './tar-archive.ts'
export * from './tick-batch.ts'
export * from './version.ts'
