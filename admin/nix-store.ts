/**
 * The admin's local Nix store, read through Nix's own command-line tools:
 * which paths are valid, their closure (`nix-store --query --requisites`),
 * their metadata (`nix path-info --json`) and their NAR serialisation
 * (`nix-store --dump`), streamed to a file while it is hashed.
 *
 * Every call goes through lib's runProcess (no shell, its own process group, a
 * deadline) with stdout kept apart from stderr, so that Nix's warnings cannot
 * mix into the JSON we parse or the NAR we hash.
 */
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { z } from 'zod'
import { CodedError, describeIssues, describeResult, runProcess } from '../lib/index.ts'
import { isStorePath, STORE_DIR, sha256HexOfNixHash } from '../protocol/index.ts'

export type NixStoreErrorCode =
  /** nix-store or nix is not installed, or not on PATH */
  | 'not-installed'
  /** A path is not valid (not built or fetched) in the local store */
  | 'not-in-store'
  /** A Nix command failed, timed out or printed something unexpected */
  | 'command-failed'
  /** `nix-store --dump` gave other bytes than the store's database records */
  | 'nar-mismatch'

export class NixStoreError extends CodedError<NixStoreErrorCode> {
  override name = 'NixStoreError'
}

export interface NixCallOptions {
  /** Environment for every Nix call (NIX_CONFIG and friends); default: this process's. */
  env?: NodeJS.ProcessEnv
  signal?: AbortSignal
}

const QUERY_TIMEOUT_MS = 10 * 60_000
/** A NAR of several GiB streams at disk speed; only a wedged Nix takes an hour. */
const DUMP_TIMEOUT_MS = 60 * 60_000
const MAX_STDOUT_BYTES = 256 * 1024 * 1024
const STDERR_TAIL_BYTES = 4096
/** Paths per `nix path-info` call, so argv stays far below the kernel's limit. */
const PATH_INFO_BATCH = 500
const NIX_COMMAND = ['--extra-experimental-features', 'nix-command']

/** "nix-store --query --requisites /nix/store/a… (+41 more)": argv short enough for an error message. */
function shown(argv: readonly string[]): string {
  const head = argv.slice(0, 4).join(' ')
  return argv.length > 4 ? `${head} (+${argv.length - 4} more arguments)` : head
}

/**
 * Runs a Nix command. Its stdout goes to `consume` when given (for streams too
 * large to hold), else it is collected (bounded) and returned. Fails with the
 * tail of stderr, which is where Nix says what went wrong.
 */
async function runNix(
  argv: readonly string[],
  options: NixCallOptions & { timeoutMs: number; consume?: (stdout: Readable) => Promise<void> },
): Promise<Buffer> {
  const chunks: Buffer[] = []
  let collected = 0
  const collect = async (stdout: Readable): Promise<void> => {
    for await (const chunk of stdout) {
      collected += (chunk as Buffer).byteLength
      if (collected > MAX_STDOUT_BYTES) throw new Error(`it printed more than ${MAX_STDOUT_BYTES} bytes`)
      chunks.push(chunk as Buffer)
    }
  }
  const result = await runProcess(argv, {
    cwd: '/',
    timeoutMs: options.timeoutMs,
    maxOutputBytes: STDERR_TAIL_BYTES,
    stdout: options.consume ?? collect,
    ...(options.env !== undefined ? { env: options.env } : {}),
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
  })
  if (result.spawnError !== null && /ENOENT/.test(result.spawnError))
    throw new NixStoreError(
      'not-installed',
      `${argv[0]} is not installed or not on PATH; install Nix on this machine (the closure is read from its local Nix store)`,
    )
  if (options.signal?.aborted) throw new NixStoreError('command-failed', `"${shown(argv)}" was cancelled`)
  if (result.code !== 0 || result.consumerError !== null)
    throw new NixStoreError('command-failed', describeResult([shown(argv)], result))
  return Buffer.concat(chunks)
}

const lines = (out: Buffer): string[] =>
  out
    .toString('utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)

/** Which of `paths` are not valid in the local store (never built, fetched, or since collected). */
export async function invalidStorePaths(
  paths: readonly string[],
  options: NixCallOptions = {},
): Promise<string[]> {
  if (paths.length === 0) return []
  const out = await runNix(['nix-store', '--check-validity', '--print-invalid', ...paths], {
    ...options,
    timeoutMs: QUERY_TIMEOUT_MS,
  })
  return lines(out)
}

/** Fails naming every path of `paths` the local store does not hold. */
export async function requireInStore(paths: readonly string[], options: NixCallOptions = {}): Promise<void> {
  const invalid = await invalidStorePaths(paths, options)
  if (invalid.length > 0)
    throw new NixStoreError(
      'not-in-store',
      `not in the local Nix store: ${invalid.join(', ')}; build ${invalid.length === 1 ? 'it' : 'them'} here first (nix-build, nixos-rebuild build) or fetch ${invalid.length === 1 ? 'it' : 'them'} (nix-store --realise)`,
    )
}

/** The closure of `paths`: every path they reference, transitively, and themselves; dependencies first. */
export async function storeClosure(
  paths: readonly string[],
  options: NixCallOptions = {},
): Promise<string[]> {
  const out = await runNix(['nix-store', '--query', '--requisites', ...paths], {
    ...options,
    timeoutMs: QUERY_TIMEOUT_MS,
  })
  const closure = lines(out)
  for (const p of closure)
    if (!isStorePath(p))
      throw new NixStoreError(
        'command-failed',
        `nix-store --query --requisites printed "${p}", not a store path`,
      )
  return closure
}

/** What the local store records about one valid path. */
export interface LocalPathInfo {
  path: string
  /** SHA-256 of its NAR, lowercase hex */
  narSha256: string
  narSize: number
  /** Basenames (`<hash>-<name>`), sorted, as a narinfo lists them */
  references: string[]
  /** Basename of the .drv, or null */
  deriver: string | null
  signatures: string[]
  ca: string | null
}

/** `nix path-info --json` fields we use; others (registrationTime, ultimate, closureSize…) are ignored. */
const pathInfoFields = z.object({
  narHash: z.string().min(1),
  narSize: z.number().int().nonnegative(),
  references: z.array(z.string()),
  deriver: z.string().nullable().optional(),
  signatures: z.array(z.string()).optional(),
  ca: z.string().nullable().optional(),
})
type PathInfoFields = z.infer<typeof pathInfoFields>
/** Nix 2.8…2.18: an array of objects with `path` (`valid: false` for paths not in the store). */
const pathInfoArray = z.array(
  z.union([
    pathInfoFields.extend({ path: z.string() }),
    z.object({ path: z.string(), valid: z.literal(false) }),
  ]),
)
/** Newer Nix: an object keyed by path, null for paths not in the store. */
const pathInfoObject = z.record(z.string(), pathInfoFields.nullable())

/** A store path, full or as a basename (newer Nix prints basenames), as its basename. */
function toBasename(text: string): string {
  const full = text.startsWith('/') ? text : `${STORE_DIR}/${text}`
  if (!isStorePath(full))
    throw new NixStoreError(
      'command-failed',
      `nix path-info printed "${text.slice(0, 120)}", not a store path`,
    )
  return full.slice(STORE_DIR.length + 1)
}

/** The fields nix path-info printed for each path, or null for paths it says are not valid. */
function parsePathInfo(text: string): Map<string, PathInfoFields | null> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new NixStoreError(
      'command-failed',
      `nix path-info --json printed no JSON: ${(err as Error).message}`,
    )
  }
  const out = new Map<string, PathInfoFields | null>()
  const asArray = pathInfoArray.safeParse(value)
  if (asArray.success) {
    for (const entry of asArray.data) out.set(entry.path, 'valid' in entry ? null : entry)
    return out
  }
  const asObject = pathInfoObject.safeParse(value)
  if (asObject.success) {
    for (const [path, entry] of Object.entries(asObject.data)) out.set(path, entry)
    return out
  }
  throw new NixStoreError(
    'command-failed',
    `nix path-info --json printed a format this fleetmesh does not know (${describeIssues(asArray.error)}); ` +
      'expected a list of {path, narHash, narSize, references, …} or an object keyed by store path',
  )
}

/** Metadata of each of `paths`, in their order; every one must be valid in the local store. */
export async function pathInfos(
  paths: readonly string[],
  options: NixCallOptions = {},
): Promise<LocalPathInfo[]> {
  const byPath = new Map<string, PathInfoFields | null>()
  for (let i = 0; i < paths.length; i += PATH_INFO_BATCH) {
    const batch = paths.slice(i, i + PATH_INFO_BATCH)
    const out = await runNix(['nix', ...NIX_COMMAND, 'path-info', '--json', ...batch], {
      ...options,
      timeoutMs: QUERY_TIMEOUT_MS,
    })
    for (const [path, entry] of parsePathInfo(out.toString('utf8'))) byPath.set(path, entry)
  }
  const invalid = paths.filter((p) => !byPath.get(p))
  if (invalid.length > 0)
    throw new NixStoreError('not-in-store', `not in the local Nix store: ${invalid.slice(0, 5).join(', ')}`)
  return paths.map((path) => {
    const entry = byPath.get(path) as PathInfoFields
    let narSha256: string
    try {
      narSha256 = sha256HexOfNixHash(entry.narHash)
    } catch (err) {
      throw new NixStoreError('command-failed', `nix path-info: ${path}: ${(err as Error).message}`)
    }
    return {
      path,
      narSha256,
      narSize: entry.narSize,
      references: entry.references.map(toBasename).sort(),
      deriver: entry.deriver ? toBasename(entry.deriver) : null,
      signatures: entry.signatures ?? [],
      ca: entry.ca ?? null,
    }
  })
}

/**
 * Writes the NAR of `info.path` (`nix-store --dump`) to `file`, hashing it on
 * the way, and checks it against the hash and size the store's database
 * records: a mismatch means a corrupt store, whose bytes must not be signed.
 */
export async function dumpNar(
  info: LocalPathInfo,
  file: string,
  options: NixCallOptions = {},
): Promise<void> {
  const hash = createHash('sha256')
  let size = 0
  await runNix(['nix-store', '--dump', info.path], {
    ...options,
    timeoutMs: DUMP_TIMEOUT_MS,
    consume: (stdout) =>
      pipeline(
        stdout,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            hash.update(chunk)
            size += chunk.byteLength
            yield chunk
          }
        },
        createWriteStream(file, { mode: 0o600 }),
      ),
  })
  const sha256 = hash.digest('hex')
  if (sha256 !== info.narSha256 || size !== info.narSize)
    throw new NixStoreError(
      'nar-mismatch',
      `nix-store --dump ${info.path} gave ${size} bytes with sha256 ${sha256}, but the store records ` +
        `${info.narSize} bytes with sha256 ${info.narSha256}; the local store is damaged: ` +
        `check it with "nix-store --verify --check-contents" (and repair with --repair)`,
    )
}
