/** The options of `fleetmesh deploy`, parsed into what every payload kind shares. */
import { machineName, tagName } from '../../keys/index.ts'
import { duration, flag, type Parsed, str, UsageError } from '../../lib/index.ts'
import type { HealthCheck, Targets } from '../../protocol/index.ts'
import { REMOTE_OPTIONS } from '../session.ts'

const COMMON_FLAGS =
  '[--generation <name>] [--health-check "<cmd> <args>"] [--health-timeout 30s] [--health-retries N] ' +
  '[--confirm-timeout 2m] [--expires 7d] [--no-watch] [--timeout 15m] [--json]'
const NIX_FLAGS = '[--mode switch|boot|test] [--substituter <url>]... [--trusted-key <name:base64>]...'

export const DEPLOY_USAGE = [
  `fleetmesh deploy <archive.tar.gz> --to <machine|tag:name>[,...] [--url <http url>]... ${COMMON_FLAGS}`,
  `       fleetmesh deploy --nix <store path> --to <machine|tag:name>[,...] ${NIX_FLAGS} ${COMMON_FLAGS}`,
  `       fleetmesh deploy --nix-map <machines.json> ${NIX_FLAGS} ${COMMON_FLAGS}`,
].join('\n')

/** Options that only Nix deploys take. */
export const NIX_OPTIONS = {
  nix: { type: 'string' },
  'nix-map': { type: 'string' },
  mode: { type: 'string' },
  substituter: { type: 'string', multiple: true },
  'trusted-key': { type: 'string', multiple: true },
} as const

export const DEPLOY_OPTIONS = {
  ...REMOTE_OPTIONS,
  ...NIX_OPTIONS,
  to: { type: 'string', multiple: true },
  generation: { type: 'string' },
  'health-check': { type: 'string' },
  'health-timeout': { type: 'string' },
  'health-retries': { type: 'string' },
  'confirm-timeout': { type: 'string' },
  expires: { type: 'string' },
  url: { type: 'string', multiple: true },
  'no-watch': { type: 'boolean' },
  timeout: { type: 'string' },
} as const

/** The deploy options every payload kind shares, parsed. */
export interface DeploySettings {
  /** --generation, or undefined for a name derived from the payload */
  generation: string | undefined
  healthCheck: HealthCheck | null
  confirmTimeoutMs: number
  validForMs: number
  /** false with --no-watch */
  watch: boolean
  timeoutMs: number
  json: boolean
  /** Human progress lines (stderr; silent with --json) */
  progress: (message: string) => void
}

/** `--to edge-1,tag:lab` → machines and tags, each validated, sorted and deduplicated. */
export function parseTargets(items: string[]): Targets {
  const machines: string[] = []
  const tags: string[] = []
  for (const item of items) {
    if (item.startsWith('tag:')) {
      const t = item.slice(4)
      if (!tagName.safeParse(t).success) throw new UsageError(`--to: "${t}" is not a valid tag`)
      tags.push(t)
    } else {
      if (!machineName.safeParse(item).success)
        throw new UsageError(`--to: "${item}" is not a valid machine name (use tag:<name> for tags)`)
      machines.push(item)
    }
  }
  if (machines.length + tags.length === 0)
    throw new UsageError(`--to names no machines or tags\nusage: ${DEPLOY_USAGE}`)
  return { machines: [...new Set(machines)].sort(), tags: [...new Set(tags)].sort() }
}

export function deploySettings(p: Parsed): DeploySettings {
  const json = flag(p, 'json')
  const healthArgv = str(p, 'health-check')
    ?.trim()
    .split(/\s+/)
    .filter((s) => s.length > 0)
  const healthCheck: HealthCheck | null =
    healthArgv && healthArgv.length > 0
      ? {
          command: healthArgv,
          timeoutMs: duration(p, 'health-timeout', 30_000),
          retries: Number(str(p, 'health-retries') ?? 2),
          intervalMs: 1000,
        }
      : null
  return {
    generation: str(p, 'generation'),
    healthCheck,
    confirmTimeoutMs: duration(p, 'confirm-timeout', 120_000),
    validForMs: duration(p, 'expires', 7 * 86_400_000),
    watch: !flag(p, 'no-watch'),
    timeoutMs: duration(p, 'timeout', 15 * 60_000),
    json,
    progress: (msg: string) => {
      if (!json) process.stderr.write(`${msg}\n`)
    },
  }
}
