/**
 * `fleetmesh deploy --nix <store path>` and `--nix-map <file>`: NixOS system
 * closures. A closure in the local Nix store is pushed into the coordinator's
 * cache first; one that is not must already be complete there, or the devices
 * must have a --substituter to fetch the rest from. Everything that can be
 * refused (a malformed path, unknown machines, an unavailable closure) is
 * refused before anything is pushed or signed.
 */
import { NixPublicKey, type NixSigningKey } from '../../keys/index.ts'
import { CodedError, flag, list, type Parsed, str, UsageError } from '../../lib/index.ts'
import {
  isStorePath,
  MAX_CLOSURE_MAP_MACHINES,
  MAX_ENVELOPE_BYTES,
  type Payload,
  STORE_DIR,
  type Targets,
} from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { loadAdminNixKey } from '../home.ts'
import { readNixMap } from '../nix-map.ts'
import { coordinatorCache, pushClosures } from '../nix-push.ts'
import { invalidStorePaths, NixStoreError } from '../nix-store.ts'
import { withClient } from '../session.ts'
import { DEPLOY_USAGE, type DeploySettings, deploySettings, warnIdleWindows } from './deploy-options.ts'
import { parseTargets, resolveTargets, type TargetRequest } from './deploy-targets.ts'
import { pushReporter } from './nix.ts'
import { beforeSubmit, generationName, type ManifestFields, randomId } from './rollout.ts'
import { rollOut } from './rollout-waves.ts'

export type NixDeployErrorCode =
  /** A --nix-map names machines the coordinator does not know (or this admin may not see) */
  | 'unknown-machines'
  /** A closure is neither in the local store nor complete in the cache, and no substituter was given */
  | 'closure-unavailable'
  /** No key to sign with and none to trust */
  | 'no-trusted-key'

export class NixDeployError extends CodedError<NixDeployErrorCode> {
  override name = 'NixDeployError'
}

const MODES = ['switch', 'boot', 'test'] as const
export type NixMode = (typeof MODES)[number]
/** A closure map's share of the manifest envelope; the rest is for the certificate chain and other fields. */
const MAX_CLOSURE_MAP_BYTES = MAX_ENVELOPE_BYTES - 64 * 1024
/** The manifest's limits (protocol/messages.ts payloadSchema). */
const MAX_SUBSTITUTERS = 16
const MAX_TRUSTED_KEYS = 16

function parseMode(text: string | undefined): NixMode {
  if (text === undefined) return 'switch'
  if (!(MODES as readonly string[]).includes(text))
    throw new UsageError(`--mode must be one of ${MODES.join(', ')}, got "${text}"`)
  return text as NixMode
}

function parseSubstituters(items: string[]): string[] {
  for (const item of items) {
    let url: URL | undefined
    try {
      url = new URL(item)
    } catch {
      url = undefined
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:'))
      throw new UsageError(`--substituter "${item}" is not an http(s) URL of a Nix binary cache`)
  }
  if (items.length > MAX_SUBSTITUTERS)
    throw new UsageError(`at most ${MAX_SUBSTITUTERS} --substituter URLs, got ${items.length}`)
  return [...new Set(items)]
}

/** The admin's own Nix public key (when there is one) and every --trusted-key, deduplicated. */
function trustedKeys(own: NixPublicKey | undefined, given: string[]): NixPublicKey[] {
  const keys = new Map<string, NixPublicKey>()
  if (own !== undefined) keys.set(own.toString(), own)
  for (const text of given) {
    let key: NixPublicKey
    try {
      key = NixPublicKey.parse(text, '--trusted-key')
    } catch (err) {
      throw new UsageError((err as Error).message)
    }
    keys.set(key.toString(), key)
  }
  if (keys.size === 0)
    throw new NixDeployError(
      'no-trusted-key',
      'there is no Nix key to sign the closure with, and no --trusted-key; run "fleetmesh nix keygen" first',
    )
  if (keys.size > MAX_TRUSTED_KEYS)
    throw new UsageError(`at most ${MAX_TRUSTED_KEYS} trusted keys (yours included), got ${keys.size}`)
  return [...keys.values()]
}

/** What to deploy where: one store path to --to targets, or one per machine of a --nix-map. */
type NixPlan =
  | { kind: 'single'; storePath: string; targets: TargetRequest }
  | { kind: 'map'; byMachine: Map<string, string> }

async function readPlan(p: Parsed): Promise<NixPlan> {
  const single = str(p, 'nix')
  const mapFile = str(p, 'nix-map')
  // A malformed path is refused before anything else is looked at.
  if (single !== undefined && !isStorePath(single))
    throw new UsageError(
      `--nix "${single}" is not a store path: expected /nix/store/<32-character hash>-<name> (for a ./result link: --nix "$(readlink -f result)")`,
    )
  if (single !== undefined && mapFile !== undefined)
    throw new UsageError(`give either --nix or --nix-map, not both\nusage: ${DEPLOY_USAGE}`)
  if (p.positionals.length > 0)
    throw new UsageError(
      `--nix and --nix-map deploy store paths, not "${p.positionals[0]}"\nusage: ${DEPLOY_USAGE}`,
    )
  if (list(p, 'url').length > 0)
    throw new UsageError('--url is for archives; for Nix closures give --substituter <binary cache url>')
  if (single !== undefined)
    return {
      kind: 'single',
      storePath: single,
      targets: parseTargets(list(p, 'to'), flag(p, 'allow-future-machines'), DEPLOY_USAGE),
    }
  const byMachine = await readNixMap(mapFile as string)
  if (list(p, 'to').length > 0 || flag(p, 'allow-future-machines'))
    throw new UsageError('--nix-map names the machines itself; drop --to and --allow-future-machines')
  return { kind: 'map', byMachine }
}

async function refuseUnknownMachines(client: AdminClient, names: readonly string[]): Promise<void> {
  const known = new Set((await client.machines()).map((m) => m.name))
  const unknown = names.filter((n) => !known.has(n))
  if (unknown.length > 0)
    throw new NixDeployError(
      'unknown-machines',
      `unknown machines: ${unknown.join(', ')}; known: ${[...known].sort().join(', ') || '(none enrolled)'}`,
    )
}

/** The paths valid in the local store; none when this machine has no Nix (the cache must have them). */
async function localPaths(
  storePaths: readonly string[],
  progress: (m: string) => void,
): Promise<Set<string>> {
  try {
    const invalid = new Set(await invalidStorePaths(storePaths))
    return new Set(storePaths.filter((p) => !invalid.has(p)))
  } catch (err) {
    if (!(err instanceof NixStoreError && err.code === 'not-installed')) throw err
    progress(`${err.message}; deploying from the coordinator's cache`)
    return new Set()
  }
}

/** A closure this machine cannot push must be complete in the cache, unless the devices may substitute. */
async function requireInCache(
  client: AdminClient,
  storePath: string,
  substituters: readonly string[],
  progress: (m: string) => void,
): Promise<void> {
  const closure = await client.nixClosure(storePath)
  if (closure.missing.length === 0) {
    progress(`${storePath}: complete in the coordinator's cache (${closure.paths} paths)`)
    return
  }
  if (substituters.length === 0)
    throw new NixDeployError(
      'closure-unavailable',
      `${storePath} is neither in the local Nix store nor complete in the coordinator's cache ` +
        `(${pathCount(closure.missing.length)} missing); build it here or pass --substituter`,
    )
  progress(
    `${storePath}: ${pathCount(closure.missing.length)} not in the coordinator's cache; devices fetch them from ${substituters.join(', ')}`,
  )
}

const pathCount = (n: number): string => `${n} path${n === 1 ? '' : 's'}`

/** "nixos-system-edge-1-24.05": a store path's name, without its directory and hash. */
const storeName = (path: string): string => path.slice(STORE_DIR.length + 34)

/** How the devices get and activate the closures of one Nix deploy (deploy --nix/--nix-map, apply). */
export interface NixRelease {
  activation: NixMode
  substituters: string[]
  trusted: NixPublicKey[]
  /** The admin's Nix key, which signs pushed paths no trusted key signed */
  signingKey: NixSigningKey | undefined
}

/** The release with the admin's own key and `trustedKeyTexts` trusted; no-trusted-key when there is none. */
export async function nixRelease(
  home: string,
  options: { activation?: NixMode; substituters?: string[]; trustedKeys?: string[] } = {},
): Promise<NixRelease> {
  const signingKey = await loadAdminNixKey(home)
  return {
    activation: options.activation ?? 'switch',
    substituters: options.substituters ?? [],
    trusted: trustedKeys(signingKey?.publicKey, options.trustedKeys ?? []),
    signingKey,
  }
}

/**
 * Checks that every closure of `storePaths` can reach the devices, before
 * anything is pushed or signed: each is in the local store (to be pushed), or
 * complete in the coordinator's cache, or the devices may substitute. Returns
 * the paths to push, for {@link pushNixClosures}.
 */
export async function checkNixClosures(
  client: AdminClient,
  storePaths: readonly string[],
  release: NixRelease,
  progress: (m: string) => void,
): Promise<string[]> {
  const unique = [...new Set(storePaths)].sort()
  const local = await localPaths(unique, progress)
  for (const path of unique)
    if (!local.has(path)) await requireInCache(client, path, release.substituters, progress)
  return [...local]
}

/** Pushes what the coordinator's cache lacks of the closures of `local` (from checkNixClosures). */
export async function pushNixClosures(
  client: AdminClient,
  local: readonly string[],
  release: NixRelease,
  report: { json: boolean; progress: (m: string) => void },
): Promise<void> {
  if (local.length === 0) return
  const reporter = pushReporter(report.json, report.progress)
  reporter.done(
    await pushClosures(coordinatorCache(client), local, {
      trustedKeys: release.trusted,
      signingKey: release.signingKey,
      onProgress: reporter.onProgress,
    }),
  )
}

/** What a Nix manifest shares with an archive's: the generation (undefined: from the store path) and checks. */
export type NixManifestCommon = Omit<ManifestFields, 'payload' | 'targets' | 'generation' | 'activation'> & {
  generation: string | undefined
}

/** The manifest fields of one closure for `targets`. */
export function nixManifestFields(
  storePath: string,
  targets: Targets,
  release: NixRelease,
  common: NixManifestCommon,
): ManifestFields {
  const payload: Payload = {
    kind: 'nix',
    storePath,
    substituters: release.substituters,
    trustedPublicKeys: release.trusted.map((k) => k.toString()),
  }
  return {
    ...common,
    generation: common.generation ?? generationName(storeName(storePath)),
    targets,
    payload,
    activation: release.activation,
  }
}

/**
 * The manifests of a closure map: one per machine (every agent understands
 * them), or, `inWaves`, one with the whole map (`storePaths`), since a rollout in
 * waves is one manifest. Agents from before closure maps refuse that one.
 */
export function nixMapManifests(
  byMachine: Iterable<[machine: string, storePath: string]>,
  release: NixRelease,
  common: NixManifestCommon,
  inWaves: boolean,
): ManifestFields[] {
  if (!inWaves)
    return [...byMachine].map(([m, path]) =>
      nixManifestFields(path, { machines: [m], tags: [] }, release, common),
    )
  const entries = [...byMachine].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  // Refused here, before anything is pushed, rather than when the manifest is sealed.
  const bytes = entries.reduce((n, [m, path]) => n + 2 * m.length + path.length + 8, 0)
  if (entries.length > MAX_CLOSURE_MAP_MACHINES || bytes > MAX_CLOSURE_MAP_BYTES)
    throw new UsageError(
      `a rollout in waves carries the closure map in one manifest, which holds at most ${MAX_CLOSURE_MAP_MACHINES} ` +
        `machines and about ${MAX_CLOSURE_MAP_BYTES >> 10} KiB of names and paths; the map names ` +
        `${entries.length} machines (about ${Math.ceil(bytes / 1024)} KiB). Split it, or deploy without --waves`,
    )
  const payload: Payload = {
    kind: 'nix',
    storePaths: Object.fromEntries(entries),
    substituters: release.substituters,
    trustedPublicKeys: release.trusted.map((k) => k.toString()),
  }
  return [
    {
      ...common,
      // one generation name for every machine, derived once
      generation: common.generation ?? generationName(sharedName(entries.map(([, path]) => storeName(path)))),
      targets: { machines: entries.map(([m]) => m), tags: [] },
      payload,
      activation: release.activation,
    },
  ]
}

/** What the names of a map's closures start with ("nixos-system-edge" of "…-edge-1-24.05" and "…-edge-2-24.05"). */
function sharedName(names: readonly string[]): string {
  let prefix = names[0] ?? ''
  for (const name of names) while (!name.startsWith(prefix)) prefix = prefix.slice(0, -1)
  return prefix.replace(/[-._+]+$/, '') || 'nixos-system'
}

export async function deployNix(p: Parsed, home: string): Promise<number> {
  const plan = await readPlan(p)
  const activation = parseMode(str(p, 'mode'))
  const substituters = parseSubstituters(list(p, 'substituter'))
  const settings: DeploySettings = deploySettings(p)
  const release = await nixRelease(home, { activation, substituters, trustedKeys: list(p, 'trusted-key') })
  const storePaths = plan.kind === 'single' ? [plan.storePath] : [...plan.byMachine.values()]

  return withClient(home, p, async (client) => {
    const fields = await beforeSubmit(async () => {
      // Before anything is pushed or signed: a deploy that reaches no machine fails here.
      const planned: [storePath: string, targets: Targets][] =
        plan.kind === 'single'
          ? [[plan.storePath, await resolveTargets(client, plan.targets)]]
          : [...plan.byMachine].map(([machine, path]) => [path, { machines: [machine], tags: [] }])
      if (plan.kind === 'map') await refuseUnknownMachines(client, [...plan.byMachine.keys()])
      // a --nix-map's: one per machine, or in waves one with the whole map (refused here if too large)
      const all =
        plan.kind === 'map'
          ? nixMapManifests(plan.byMachine, release, settings, settings.waves !== undefined)
          : planned.map(([path, targets]) => nixManifestFields(path, targets, release, settings))
      if (settings.windows.length > 0) {
        const enrolled = await client.machines()
        // a --nix-map's manifests together: a window tag none of its machines carries
        const targets = all.reduce<Targets>(
          (acc, { targets: t }) => ({
            machines: [...acc.machines, ...t.machines],
            tags: [...acc.tags, ...t.tags],
          }),
          { machines: [], tags: [] },
        )
        warnIdleWindows(settings.windows, targets, enrolled, settings.progress)
      }
      const local = await checkNixClosures(client, storePaths, release, settings.progress)
      await pushNixClosures(client, local, release, settings)
      return all
    })
    // One rollout: a --nix-map's per-machine manifests share its id.
    return rollOut(client, randomId(), fields, settings)
  })
}
