/**
 * A fleet file's channel turned into what deploy takes: its deploy settings
 * and its wave policy, each checked by the same code as deploy's flags
 * (deploy-options.ts, deploy-wave-options.ts), with a bad value named by its
 * place in the fleet file rather than by a flag.
 */
import { type Parsed, UsageError } from '../lib/index.ts'
import { planWaves, type WavePolicy } from '../protocol/index.ts'
import { type DeploySettings, deploySettings } from './commands/deploy-options.ts'
import { wavePolicy } from './commands/deploy-wave-options.ts'
import type { ChannelEntry, FleetFile } from './fleet-file.ts'

/** Runs `check` on `values` as if they were flags; its UsageError is re-placed at `channels.<name>`. */
function asFlags<T>(
  file: FleetFile,
  name: string,
  values: Parsed['values'],
  fields: Record<string, string>,
  check: (p: Parsed) => T,
): T {
  const sources = Object.fromEntries(
    Object.entries(fields).map(([flag, key]) => [flag, `channels.${name}.${key}`]),
  )
  try {
    return check({ values, positionals: [], sources })
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    // name the field by its file key: the range checks say "--confirm-timeout"
    let message = err.message
    for (const [flag, key] of Object.entries(fields))
      message = message.replaceAll(`--${flag}`, `channels.${name}.${key}`)
    throw new UsageError(`${file.where(['channels', name])}: channels.${name}: ${message}`)
  }
}

/** The channel's generation, health check and durations as deploy's settings (watch settings unused). */
export function channelSettings(file: FleetFile, name: string, entry: ChannelEntry): DeploySettings {
  return asFlags(
    file,
    name,
    {
      generation: entry.generation,
      'health-check': entry.healthCheck,
      'health-timeout': entry.healthTimeout,
      'confirm-timeout': entry.confirmTimeout,
      expires: entry.expires,
      json: true,
    },
    {
      generation: 'generation',
      'health-check': 'healthCheck',
      'health-timeout': 'healthTimeout',
      'confirm-timeout': 'confirmTimeout',
      expires: 'expires',
    },
    deploySettings,
  )
}

/** The channel's `rollout` as a wave policy; undefined without one. */
export function channelPolicy(file: FleetFile, name: string, entry: ChannelEntry): WavePolicy | undefined {
  const r = entry.rollout
  if (r === undefined) return undefined
  return asFlags(
    file,
    name,
    {
      waves: r.waves.join(','),
      'max-failures': r.maxFailures,
      soak: r.soak,
      'on-failure': r.onFailure,
      'canary-tag': r.canaryTag,
      'offline-timeout': r.offlineTimeout,
    },
    {
      waves: 'rollout.waves',
      'max-failures': 'rollout.maxFailures',
      soak: 'rollout.soak',
      'on-failure': 'rollout.onFailure',
      'canary-tag': 'rollout.canaryTag',
      'offline-timeout': 'rollout.offlineTimeout',
    },
    wavePolicy,
  )
}

/** The wave (from 1) of each machine, as the coordinator's rollout engine cuts them (protocol planWaves). */
export function predictWaves(
  machines: readonly { name: string; tags: readonly string[] }[],
  policy: WavePolicy,
): Map<string, number> {
  const waves = new Map<string, number>()
  planWaves(machines, policy).forEach((wave, k) => {
    for (const name of wave) waves.set(name, k + 1)
  })
  return waves
}
