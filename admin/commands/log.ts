/**
 * `fleetmesh logs <machine>` (also `log`): the last update log a machine
 * reported, with its outcome; with `--follow`, then the running (or next)
 * update live, until it ends (log-follow.ts).
 */
import {
  type CommandSpec,
  duration,
  flag,
  type Options,
  output,
  parseCommand,
  str,
  UsageError,
} from '../../lib/index.ts'
import type { MachineLog } from '../../protocol/index.ts'
import { AdminRequestError } from '../client.ts'
import { ago } from '../format.ts'
import { machineArgument, REMOTE_OPTIONS, withClient } from '../session.ts'
import { describeUnsupported, followUnsupported, followUpdate } from './log-follow.ts'

const LOGS_USAGE =
  'fleetmesh logs <machine> [--follow [--timeout <duration>]] [--coordinator <multiaddr>]... [--json]'

const LOGS_OPTIONS = {
  ...REMOTE_OPTIONS,
  follow: {
    type: 'boolean',
    description:
      'then follow the update running on the machine (or the next to start) live: its states and output, until it ends',
  },
  timeout: {
    type: 'string',
    value: '<duration>',
    description: 'with --follow: give up after this long (exit 2); the update goes on',
    default: 'no limit',
  },
} as const satisfies Options

const FOLLOW_NOTES = [
  'with --follow, --json prints JSON lines: the last log ({"type":"log",…}), then "state", "output" (text at a',
  'byte offset of the live log), "gap" (output lost on the way), "online"/"offline", and "settled" or "timeout";',
  'when live output may be missing, the log the machine reported ({"type":"log",…}) comes just before "settled".',
  'exit codes with --follow (as deploy):',
  '  0  the update committed',
  '  1  it rolled back, failed or was refused (the reason is printed), or the command failed',
  '  2  the --timeout passed first; the update goes on (2 is also what a usage error exits with)',
]

export const LOGS_COMMAND: CommandSpec = {
  name: 'logs',
  summary:
    "Show a machine's last update log: state, generation, error, pending reboot, output; --follow tails a running update.",
  usage: LOGS_USAGE,
  options: LOGS_OPTIONS,
  notes: FOLLOW_NOTES,
  examples: ['fleetmesh logs web-1', 'fleetmesh logs web-1 --follow --timeout 30m'],
}

/** `log`, the command's first name, kept working as an alias. */
export const LOG_COMMAND: CommandSpec = {
  ...LOGS_COMMAND,
  name: 'log',
  summary: 'Same as "logs" (its older name).',
  usage: LOGS_USAGE.replace('fleetmesh logs', 'fleetmesh log'),
  examples: ['fleetmesh log web-1'],
}

export function describeMachineLog(l: MachineLog): string {
  const reported =
    l.reportedAt === null ? '-' : `${new Date(l.reportedAt).toISOString()} (${ago(l.reportedAt)})`
  return [
    `machine          ${l.machine}`,
    `state            ${l.state ?? '-'}${l.manifestId ? ` (manifest ${l.manifestId})` : ''}`,
    `generation       ${l.generation ?? '-'}`,
    `error            ${l.error ? `${l.error.code}: ${l.error.message}` : '-'}`,
    `reboot required  ${l.rebootRequired ? 'yes: the update takes effect at the next boot' : 'no'}`,
    `reported         ${reported}`,
    '',
    l.log === null || l.log === '' ? '(no update log reported)' : l.log.trimEnd(),
  ].join('\n')
}

/** How long the coordinator may take to start the follow (as for any request). */
const FIRST_EVENT_MS = 30_000
const say = (line: string) => process.stderr.write(`${line}\n`)
const write = (text: string) => process.stdout.write(text)

export function logs(argv: string[], home: string): Promise<number> {
  return run(argv, home, LOGS_COMMAND)
}

/** `fleetmesh log`, the alias. */
export function log(argv: string[], home: string): Promise<number> {
  return run(argv, home, LOG_COMMAND)
}

async function run(argv: string[], home: string, spec: CommandSpec): Promise<number> {
  const p = parseCommand(argv, spec)
  const usage = spec.usage
  const machine = machineArgument(p, spec.name, usage)
  if (machine === undefined) throw new UsageError(`name the machine\nusage: ${usage}`)
  const follow = flag(p, 'follow')
  if (!follow && str(p, 'timeout') !== undefined)
    throw new UsageError(`--timeout goes with --follow\nusage: ${usage}`)
  const timeoutMs = str(p, 'timeout') === undefined ? null : duration(p, 'timeout', 0)
  const json = flag(p, 'json')
  return withClient(home, p, async (c) => {
    if (!follow) {
      const result = await c.machineLog(machine)
      output(json, result, () => describeMachineLog(result))
      return 0
    }
    let watch = await c.watchMachine(machine)
    const reopen = async () => {
      watch = await c.watchMachine(machine)
      return watch
    }
    try {
      // The snapshot comes once the coordinator follows the machine: an update that starts
      // after the last log is read is not missed (and a refusal comes before any output).
      const first = await watch.next(FIRST_EVENT_MS)
      const last = await c.machineLog(machine)
      write(json ? `${JSON.stringify({ type: 'log', ...last })}\n` : `${describeMachineLog(last)}\n\n`)
      return await followUpdate(watch, machine, {
        timeoutMs,
        json,
        write,
        say,
        first,
        reopen,
        lastLog: () => c.machineLog(machine),
      })
    } catch (err) {
      if (followUnsupported(err)) throw new AdminRequestError('unsupported', describeUnsupported(err))
      throw err
    } finally {
      watch.close()
    }
  })
}
