/** The options of `fleetmesh deploy`, parsed into what every payload kind shares. */
import { type CommandSpec, duration, flag, type Options, type Parsed, str } from '../../lib/index.ts'
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
  nix: {
    type: 'string',
    value: '<store path>',
    description: "deploy this NixOS system closure (pushed to the coordinator's cache) instead of an archive",
  },
  'nix-map': {
    type: 'string',
    value: '<machines.json>',
    description: 'deploy a closure per machine: a JSON object of machine name to store path',
  },
  mode: {
    type: 'string',
    value: 'switch|boot|test',
    description: 'how the agents activate the closure (as nixos-rebuild)',
    default: 'switch',
  },
  substituter: {
    type: 'string',
    multiple: true,
    value: '<url>',
    description: 'extra binary cache the agents may fetch store paths from',
  },
  'trusted-key': {
    type: 'string',
    multiple: true,
    value: '<name:base64>',
    description: 'public key of such a cache that the agents trust',
  },
} as const satisfies Options

export const DEPLOY_OPTIONS = {
  ...REMOTE_OPTIONS,
  ...NIX_OPTIONS,
  to: {
    type: 'string',
    multiple: true,
    value: '<machine|tag:name|all>[,...]',
    description: 'target machines; "all" is every machine enrolled now (use a tag to reach later ones too)',
  },
  'allow-future-machines': {
    type: 'boolean',
    description:
      'sign even when --to matches no enrolled machine yet (e.g. a tag for machines still to come)',
  },
  generation: {
    type: 'string',
    value: '<name>',
    description: 'the generation name the machines report',
    default: 'derived from the archive or store path name',
  },
  'health-check': {
    type: 'string',
    value: '"<cmd> <args>"',
    description: 'command each machine runs after activating; failing it rolls the machine back',
    default: 'none',
  },
  'health-timeout': {
    type: 'string',
    value: '<duration>',
    description: 'how long one health check run may take',
    default: '30s',
  },
  'health-retries': {
    type: 'string',
    value: 'N',
    description: 'how often a failed health check is retried before rolling back',
    default: '2',
  },
  'confirm-timeout': {
    type: 'string',
    value: '<duration>',
    description: 'how long a machine waits to confirm the new generation before rolling back',
    default: '2m',
  },
  expires: {
    type: 'string',
    value: '<duration>',
    description: 'how long the signed manifest stays valid for machines that have not applied it',
    default: '7d',
  },
  url: {
    type: 'string',
    multiple: true,
    value: '<http url>',
    description: 'extra place the machines may download the archive from (archives only)',
  },
  'no-watch': { type: 'boolean', description: 'submit the rollout and exit without watching it' },
  timeout: {
    type: 'string',
    value: '<duration>',
    description: 'stop watching after this long (the rollout continues)',
    default: '15m',
  },
} as const satisfies Options

export const DEPLOY_COMMAND: CommandSpec = {
  name: 'deploy',
  summary:
    'Upload an archive or push a NixOS closure (--nix, --nix-map), sign a manifest and roll it out; watches until every machine settles.',
  usage: DEPLOY_USAGE,
  options: DEPLOY_OPTIONS,
  examples: [
    'fleetmesh deploy app-1.4.tar.gz --to tag:web --health-check "curl -fsS http://localhost:8080/health"',
  ],
}

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
