/** The options of `fleetmesh deploy`, parsed into what every payload kind shares. */

import {
  type CommandSpec,
  duration,
  flag,
  int,
  list,
  type Options,
  type Parsed,
  str,
  UsageError,
} from '../../lib/index.ts'
import {
  blobSource,
  type HealthCheck,
  MAX_WINDOWS,
  type MachineView,
  type MaintenanceWindow,
  parseWindowArg,
  type Targets,
  targetsMachine,
  type WavePolicy,
  WindowSyntaxError,
} from '../../protocol/index.ts'
import { WATCH_EXIT_NOTES } from '../rollout-outcome.ts'
import { REMOTE_OPTIONS } from '../session.ts'
import { WAVE_NOTES, WAVE_OPTIONS, wavePolicy } from './deploy-wave-options.ts'

const COMMON_FLAGS =
  '[--generation <name>] [--health-check "<cmd> <args>"] [--health-timeout 30s] [--health-retries N] ' +
  '[--confirm-timeout 2m] [--expires 7d] [--window <tag>=HH:MM-HH:MM[@days]]... [--no-watch] [--timeout 15m] [--json]'
const NIX_FLAGS = '[--mode switch|boot|test] [--substituter <url>]... [--trusted-key <name:base64>]...'

const TO = '--to <machine|tag:name|all>[,...] [--allow-future-machines]'
const WAVES =
  '[--waves 1,10%,100% [--max-failures N|P%] [--soak 10m] [--on-failure halt|rollback] [--canary-tag <tag>] [--offline-timeout 10m]]'

export const DEPLOY_USAGE = [
  `fleetmesh deploy <archive.tar.gz> ${TO} [--url <http url>]... ${COMMON_FLAGS} ${WAVES}`,
  `       fleetmesh deploy --nix <store path> ${TO} ${NIX_FLAGS} ${COMMON_FLAGS} ${WAVES}`,
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
    description: 'how long one health check run may take, from 100ms to 1h',
    default: '30s',
  },
  'health-retries': {
    type: 'string',
    value: 'N',
    description: 'how often a failed health check is retried before rolling back, 0 to 100',
    default: '2',
  },
  'confirm-timeout': {
    type: 'string',
    value: '<duration>',
    description: 'how long a machine waits to confirm the new generation before rolling back, from 1s to 24h',
    default: '2m',
  },
  expires: {
    type: 'string',
    value: '<duration>',
    description:
      'how long the signed manifest stays valid for machines that have not applied it, from 1s to 365d',
    default: '7d',
  },
  window: {
    type: 'string',
    multiple: true,
    value: '<tag>=HH:MM-HH:MM[@days]',
    description:
      "maintenance window: machines with <tag> download at once but activate only between the two times, in the device's time zone (agent --timezone), on the days named (mon,tue,… or mon-fri; every day if none); an end before the start spans midnight; a machine with windows for several tags activates in any of them; deploy watches until they activate, so use --no-watch (or a longer --timeout) for a window that opens later",
    default: 'none: activate at once',
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
    description: 'stop watching after this long (the rollout continues), from 1s to 30d',
    default: '15m',
  },
  ...WAVE_OPTIONS,
} as const satisfies Options

export const DEPLOY_COMMAND: CommandSpec = {
  name: 'deploy',
  summary:
    'Upload an archive or push a NixOS closure (--nix, --nix-map), sign a manifest and roll it out; watches until every machine settles.',
  usage: DEPLOY_USAGE,
  options: DEPLOY_OPTIONS,
  notes: [
    'exit codes (the same as watch --rollout; with --no-watch, 0 once the rollout is stored):',
    ...WATCH_EXIT_NOTES.slice(1),
    ...WAVE_NOTES,
  ],
  examples: [
    'fleetmesh deploy app-1.4.tar.gz --to tag:web --health-check "curl -fsS http://localhost:8080/health"',
    'fleetmesh deploy app-1.5.tar.gz --to tag:web --waves 1,10%,50%,100% --max-failures 5% --soak 10m --on-failure rollback',
    'fleetmesh deploy app-1.6.tar.gz --to tag:web --window web=22:00-04:00@mon-fri --window web=02:00-06:00@sat,sun',
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
  /** --waves and its options; undefined: every target at once */
  waves: WavePolicy | undefined
  /** --window: when the machines may activate (empty: at once) */
  windows: MaintenanceWindow[]
  /** Human progress lines (stderr; silent with --json) */
  progress: (message: string) => void
}

const SECOND = 1000
const HOUR = 3_600_000
const DAY = 24 * HOUR

/**
 * A duration flag within the range the manifest schema (protocol/messages.ts)
 * or the watch allows: a value outside it must fail here, naming its flag,
 * and not as a schema error after the upload.
 */
function boundedDuration(
  p: Parsed,
  name: string,
  fallbackMs: number,
  range: { min: number; max: number; text: string },
): number {
  const ms = duration(p, name, fallbackMs)
  if (ms < range.min || ms > range.max)
    throw new UsageError(`--${name} must be from ${range.text}, got "${str(p, name)}"`)
  return ms
}

const GENERATION = /^[A-Za-z0-9._+-]{1,128}$/

/** --url: what a manifest's http source accepts; the coordinator is always the first source. */
function checkUrls(urls: readonly string[]): void {
  if (urls.length > 7) throw new UsageError(`give at most 7 --url, got ${urls.length}`)
  for (const url of urls)
    if (!blobSource.safeParse({ kind: 'http', url }).success)
      throw new UsageError(`--url "${url}" is not an http:// or https:// URL (at most 2048 characters)`)
}

/**
 * The deploy options every payload kind shares, parsed and checked against
 * what the manifest accepts. Deploy calls this before it uploads or signs
 * anything, so every bad value fails first, naming its flag.
 */
export function deploySettings(p: Parsed): DeploySettings {
  const json = flag(p, 'json')
  const generation = str(p, 'generation')
  if (generation !== undefined && !GENERATION.test(generation))
    throw new UsageError(
      `--generation "${generation}": use 1 to 128 letters, digits and . _ + - (e.g. app-1.4)`,
    )
  const healthArgv = str(p, 'health-check')
    ?.trim()
    .split(/\s+/)
    .filter((s) => s.length > 0)
  if (healthArgv !== undefined && (healthArgv.length > 64 || healthArgv.some((a) => a.length > 4096)))
    throw new UsageError('--health-check takes at most 64 words of at most 4096 characters each')
  // checked even without --health-check: a typo must not pass silently
  const healthTimeoutMs = boundedDuration(p, 'health-timeout', 30 * SECOND, {
    min: 100,
    max: HOUR,
    text: '100ms to 1h',
  })
  const retries = int(p, 'health-retries', 2, 0, 100)
  checkUrls(list(p, 'url'))
  const healthCheck: HealthCheck | null =
    healthArgv && healthArgv.length > 0
      ? { command: healthArgv, timeoutMs: healthTimeoutMs, retries, intervalMs: 1000 }
      : null
  return {
    generation,
    healthCheck,
    confirmTimeoutMs: boundedDuration(p, 'confirm-timeout', 2 * 60 * SECOND, {
      min: SECOND,
      max: DAY,
      text: '1s to 24h',
    }),
    validForMs: boundedDuration(p, 'expires', 7 * DAY, { min: SECOND, max: 365 * DAY, text: '1s to 365d' }),
    watch: !flag(p, 'no-watch'),
    waves: wavePolicy(p),
    windows: parseWindows(list(p, 'window')),
    timeoutMs: boundedDuration(p, 'timeout', 15 * 60 * SECOND, {
      min: SECOND,
      max: 30 * DAY,
      text: '1s to 30d',
    }),
    json,
    progress: (msg: string) => {
      if (!json) process.stderr.write(`${msg}\n`)
    },
  }
}

/** --window, each checked as the manifest takes it. */
function parseWindows(items: readonly string[]): MaintenanceWindow[] {
  if (items.length > MAX_WINDOWS)
    throw new UsageError(`give at most ${MAX_WINDOWS} --window, got ${items.length}`)
  return items.map((item) => {
    try {
      return parseWindowArg(item)
    } catch (err) {
      if (err instanceof WindowSyntaxError) throw new UsageError(`--window: ${err.message}`)
      throw err
    }
  })
}

/**
 * Says which --window tags no enrolled target carries: such a window holds back
 * no machine now (a typo?), but one that gets the tag later keeps to it.
 */
export function warnIdleWindows(
  windows: readonly MaintenanceWindow[],
  targets: Targets,
  enrolled: readonly MachineView[],
  progress: (message: string) => void,
): void {
  const carried = new Set(
    enrolled.filter((m) => targetsMachine(targets, m.name, m.tags)).flatMap((m) => m.tags),
  )
  const idle = [...new Set(windows.map((w) => w.tag).filter((t) => !carried.has(t)))]
  if (idle.length > 0)
    progress(
      `warning: no target machine carries ${idle.map((t) => `tag:${t}`).join(', ')}: ` +
        'those --window entries hold back no machine now (the others activate at once)',
    )
}
