/**
 * A fleet file's channel turned into what deploy takes: its deploy settings
 * and its wave policy, each checked by the same code as deploy's flags
 * (deploy-options.ts, deploy-wave-options.ts), with a bad value named by its
 * place in the fleet file rather than by a flag.
 */
import { type Parsed, sha256Hex, UsageError } from '../lib/index.ts'
import type { Share, WavePolicy } from '../protocol/index.ts'
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

const resolveShare = (share: Share, total: number): number =>
  'count' in share ? Math.min(share.count, total) : Math.min(total, Math.ceil((share.percent * total) / 100))

/**
 * The wave (from 1) of each machine, as the coordinator's rollout engine cuts
 * them: canary-tagged machines first (all in the first wave), then by the
 * SHA-256 of the name; the last wave takes the rest; empty waves dropped.
 * This mirrors coordinator/waves.ts planWaves, which plan cannot import (roles
 * do not import each other); it belongs in protocol/ to be shared.
 */
export function predictWaves(
  machines: readonly { name: string; tags: readonly string[] }[],
  policy: WavePolicy,
): Map<string, number> {
  const canary = (m: { tags: readonly string[] }) =>
    policy.canaryTag !== null && m.tags.includes(policy.canaryTag)
  const order = machines
    .map((m) => ({ name: m.name, canary: canary(m), key: sha256Hex(m.name) }))
    .sort(
      (a, b) =>
        Number(b.canary) - Number(a.canary) ||
        (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) ||
        (a.name < b.name ? -1 : 1),
    )
  const canaries = order.filter((m) => m.canary).length
  const waves = new Map<string, number>()
  let from = 0
  let wave = 0
  policy.waves.forEach((share, k) => {
    let upTo = Math.max(from, resolveShare(share, order.length))
    if (k === 0) upTo = Math.max(upTo, canaries)
    if (k === policy.waves.length - 1) upTo = order.length
    if (upTo > from) {
      wave++
      for (const m of order.slice(from, upTo)) waves.set(m.name, wave)
    }
    from = upTo
  })
  return waves
}
