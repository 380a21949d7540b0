/** The options of `fleetmesh deploy`, parsed into what every payload kind shares. */
import { duration, flag, type Parsed, str } from '../../lib/index.ts'
import type { HealthCheck } from '../../protocol/index.ts'
import { REMOTE_OPTIONS } from '../session.ts'

const COMMON_FLAGS =
  '[--generation <name>] [--health-check "<cmd> <args>"] [--health-timeout 30s] [--health-retries N] ' +
  '[--confirm-timeout 2m] [--expires 7d] [--no-watch] [--timeout 15m] [--json]'
const NIX_FLAGS = '[--mode switch|boot|test] [--substituter <url>]... [--trusted-key <name:base64>]...'

const TO = '--to <machine|tag:name|all>[,...] [--allow-future-machines]'

export const DEPLOY_USAGE = [
  `fleetmesh deploy <archive.tar.gz> ${TO} [--url <http url>]... ${COMMON_FLAGS}`,
  `       fleetmesh deploy --nix <store path> ${TO} ${NIX_FLAGS} ${COMMON_FLAGS}`,
  `       fleetmesh deploy --nix-map <machines.json> ${NIX_FLAGS} ${COMMON_FLAGS}`,
  '  --to all: every machine enrolled now; machines enrolled later do not receive it',
  '            (to reach future members too, target a tag they will carry: --to tag:<name>)',
  '  --allow-future-machines: sign even when --to matches no enrolled machine yet',
  '            (e.g. a tag for machines still to be enrolled); without it such a deploy fails at once',
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
  'allow-future-machines': { type: 'boolean' },
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
