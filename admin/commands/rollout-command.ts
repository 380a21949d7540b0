/**
 * `fleetmesh rollout list|show|pause|resume|abort`: the rollouts in waves
 * (`deploy --waves`) this admin's certificate covers. Every request is signed;
 * pause, resume and abort need the deploy capability on all the rollout's
 * machines and are audited.
 */
import {
  type CommandSpec,
  duration,
  flag,
  int,
  output,
  parseCommand,
  str,
  UsageError,
} from '../../lib/index.ts'
import type { RolloutView } from '../../protocol/index.ts'
import { EXIT } from '../rollout-outcome.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'
import { followWaves, waveLine } from './rollout-follow.ts'

const ID = '<rollout id>'

const spec = (
  name: string,
  summary: string,
  usage: string,
  extra = {},
  notes: string[] = [],
): CommandSpec => ({
  name: `rollout ${name}`,
  summary,
  usage: `fleetmesh rollout ${usage} [--coordinator <multiaddr>]... [--json]`,
  options: { ...REMOTE_OPTIONS, ...extra },
  notes,
  examples: [`fleetmesh rollout ${usage.replace(ID, '4f1c…')}`],
})

export const ROLLOUT_LIST_COMMAND = spec(
  'list',
  'List rollouts in waves, newest first.',
  'list [--limit N]',
  {
    limit: { type: 'string', value: 'N', description: 'how many rollouts, 1 to 1000', default: '20' },
  },
)
export const ROLLOUT_SHOW_COMMAND = spec(
  'show',
  'Show where a rollout in waves stands, machine by machine; --watch follows it until it ends.',
  `show ${ID} [--watch [--timeout <duration>]]`,
  {
    watch: {
      type: 'boolean',
      description:
        'follow the rollout wave by wave, as the coordinator reports each change, until it is done, halted or aborted',
    },
    timeout: {
      type: 'string',
      value: '<duration>',
      description: 'with --watch: give up after this long (90s, 15m, 12h, 2d); the rollout goes on',
      default: 'no limit',
    },
  },
  [
    'exit codes with --watch:',
    `  ${EXIT.committed}  the rollout is done and every machine of it committed`,
    `  ${EXIT.notCommitted}  it is done, but some machine failed (or the command failed)`,
    `  ${EXIT.timedOut}  the --timeout passed first; the rollout goes on (${EXIT.timedOut} is also what a usage error exits with)`,
    `  ${EXIT.halted}  it halted or was aborted; the reason is printed`,
  ],
)
export const ROLLOUT_PAUSE_COMMAND = spec(
  'pause',
  'Pause a rollout in waves: machines of started waves go on, no further wave starts.',
  `pause ${ID}`,
)
export const ROLLOUT_RESUME_COMMAND = spec('resume', 'Resume a paused rollout in waves.', `resume ${ID}`)
export const ROLLOUT_ABORT_COMMAND = spec(
  'abort',
  'Abort a rollout in waves: machines that have not taken the release yet never get it.',
  `abort ${ID}`,
)

function rolloutId(p: { positionals: string[] }, usage: string): string {
  const id = p.positionals[0]
  if (id === undefined || !/^[0-9a-f]{32}$/.test(id))
    throw new UsageError(
      `name the rollout: its 32-hex-digit id (see "fleetmesh rollout list")\nusage: ${usage}`,
    )
  return id
}

function details(v: RolloutView): string {
  const lines = [waveLine(v)]
  for (let k = 0; k < v.waves; k++) {
    const machines = v.machines.filter((m) => m.wave === k)
    lines.push(`  wave ${k + 1}: ${machines.map((m) => `${m.name} (${m.outcome})`).join(', ')}`)
  }
  return lines.join('\n')
}

export async function rolloutList(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, ROLLOUT_LIST_COMMAND)
  const limit = int(p, 'limit', 20, 1, 1000)
  const result = await withClient(home, p, (c) => c.rolloutList(limit))
  output(flag(p, 'json'), result, () =>
    result.length === 0 ? 'no rollouts in waves' : result.map((v) => waveLine(v)).join('\n'),
  )
}

export async function rolloutShow(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, ROLLOUT_SHOW_COMMAND)
  const id = rolloutId(p, ROLLOUT_SHOW_COMMAND.usage)
  const json = flag(p, 'json')
  const watch = flag(p, 'watch')
  if (!watch && str(p, 'timeout') !== undefined)
    throw new UsageError(`--timeout only applies with --watch\nusage: ${ROLLOUT_SHOW_COMMAND.usage}`)
  // 0 or no --timeout: follow it until it ends, however long that takes.
  const timeoutMs = duration(p, 'timeout', 0) || null
  return withClient(home, p, async (c) => {
    if (watch)
      return followWaves(c, id, timeoutMs, json, (line) => {
        if (!json) process.stderr.write(`${line}\n`)
      })
    const view = await c.rolloutShow(id)
    output(json, view, () => details(view))
    return 0
  })
}

const control =
  (action: 'pause' | 'resume' | 'abort', command: CommandSpec) =>
  async (argv: string[], home: string): Promise<void> => {
    const p = parseCommand(argv, command)
    const id = rolloutId(p, command.usage)
    const view = await withClient(home, p, (c) => c.rolloutControl(id, action))
    output(flag(p, 'json'), view, () => waveLine(view))
  }

export const rolloutPause = control('pause', ROLLOUT_PAUSE_COMMAND)
export const rolloutResume = control('resume', ROLLOUT_RESUME_COMMAND)
export const rolloutAbort = control('abort', ROLLOUT_ABORT_COMMAND)
