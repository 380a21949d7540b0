/**
 * The options of `fleetmesh deploy` for rollouts in waves, parsed into a
 * WavePolicy (protocol/messages.ts) before anything is uploaded or signed.
 * Without --waves none of them may be given and the deploy goes to every target
 * at once, as always.
 */

import { tagName } from '../../keys/index.ts'
import { duration, type Options, type Parsed, str, UsageError } from '../../lib/index.ts'
import { formatShare, parseShare, type Share, type WavePolicy } from '../../protocol/index.ts'

export const WAVE_OPTIONS = {
  waves: {
    type: 'string',
    value: '<share>[,<share>...]',
    description:
      'roll out in waves: cumulative shares of the targets, a count or a percentage (e.g. 1,10%,50%,100%: ' +
      'a canary first); machines are ordered by the hash of their name, so reruns pick the same canaries',
    default: 'all targets at once',
  },
  'max-failures': {
    type: 'string',
    value: 'N|P%',
    description: 'failures allowed per wave and over the whole rollout; one more halts it (with --waves)',
    default: '0',
  },
  soak: {
    type: 'string',
    value: '<duration>',
    description: 'how long a settled wave must stay healthy before the next starts (with --waves)',
    default: '0s',
  },
  'on-failure': {
    type: 'string',
    value: 'halt|rollback',
    description:
      'on a halt, withhold the release from the machines that have not taken it; rollback also sends the ' +
      'previous generation (signed now, held by the coordinator) to those that did (with --waves)',
    default: 'halt',
  },
  'canary-tag': {
    type: 'string',
    value: '<tag>',
    description: 'machines with this tag are put in the first wave (with --waves)',
    default: 'none',
  },
  'offline-timeout': {
    type: 'string',
    value: '<duration>',
    description:
      'a machine of a started wave offline this long counts as skipped, not pending; it still gets the ' +
      'release when it returns, unless the rollout halted (with --waves)',
    default: '10m',
  },
} as const satisfies Options

/** Lines for deploy --help: how waves, halts and rollbacks work. */
export const WAVE_NOTES = [
  'rollouts in waves (--waves): you sign one manifest for all targets; the coordinator only decides when',
  "  each machine gets it, wave by wave (with --nix-map: one manifest carrying every machine's closure, which",
  '  agents from before closure maps refuse). More failures than --max-failures (in a wave or overall) halt the',
  '  rollout, with the reason audited; "fleetmesh rollout list|show|pause|resume|abort" manage it.',
  '  With --on-failure rollback, deploy also signs one manifest per previous desired generation of the',
  '  targets (sequences above the release, for the same payload: an archive must still be on the',
  '  coordinator); the coordinator sends them only on a halt. Machines without one are left as they are.',
]

const DAY = 86_400_000

/** The wave policy, or undefined without --waves (then no other wave option may be given). */
export function wavePolicy(p: Parsed): WavePolicy | undefined {
  const waves = str(p, 'waves')
  if (waves === undefined) {
    const stray = Object.keys(WAVE_OPTIONS).find((name) => p.values[name] !== undefined)
    if (stray !== undefined) throw new UsageError(`--${stray} goes with --waves`)
    return undefined
  }
  const shares = waves.split(',').map((text) => share('--waves', text, false))
  if (shares.length > 20) throw new UsageError(`--waves takes at most 20 waves, got ${shares.length}`)
  const maxFailures = share('--max-failures', str(p, 'max-failures') ?? '0', true)
  const onFailure = str(p, 'on-failure') ?? 'halt'
  if (onFailure !== 'halt' && onFailure !== 'rollback')
    throw new UsageError(`--on-failure must be halt or rollback, got "${onFailure}"`)
  const canaryTag = str(p, 'canary-tag') ?? null
  if (canaryTag !== null && !tagName.safeParse(canaryTag).success)
    throw new UsageError(`--canary-tag "${canaryTag}" is not a tag name`)
  const soakMs = duration(p, 'soak', 0)
  if (soakMs > 7 * DAY) throw new UsageError(`--soak must be at most 7d, got "${str(p, 'soak')}"`)
  const offlineTimeoutMs = duration(p, 'offline-timeout', 10 * 60_000)
  if (offlineTimeoutMs < 1000 || offlineTimeoutMs > 30 * DAY)
    throw new UsageError(`--offline-timeout must be from 1s to 30d, got "${str(p, 'offline-timeout')}"`)
  return { waves: shares, maxFailures, soakMs, onFailure, canaryTag, offlineTimeoutMs }
}

function share(flag: string, text: string, zero: boolean): Share {
  const s = parseShare(text)
  if (s === undefined || (!zero && 'count' in s && s.count === 0))
    throw new UsageError(
      `${flag} takes ${zero ? 'a count (0 or more)' : 'counts (1 or more)'} or percentages like 10%, got "${text}"`,
    )
  return s
}

/** "1, 10%, 100%; max failures 0; soak 0s; halt". */
export function describePolicy(policy: WavePolicy): string {
  return (
    `waves ${policy.waves.map(formatShare).join(', ')}; max failures ${formatShare(policy.maxFailures)}; ` +
    `soak ${Math.round(policy.soakMs / 1000)}s; on failure ${policy.onFailure}` +
    (policy.canaryTag !== null ? `; canaries: tag ${policy.canaryTag}` : '')
  )
}
