/** `fleetmesh log <machine>`: the last update log a machine reported, with its outcome. */
import { type CommandSpec, flag, output, parseCommand, UsageError } from '../../lib/index.ts'
import type { MachineLog } from '../../protocol/index.ts'
import { ago } from '../format.ts'
import { machineArgument, REMOTE_OPTIONS, withClient } from '../session.ts'

const LOG_USAGE = 'fleetmesh log <machine> [--coordinator <multiaddr>]... [--json]'

export const LOG_COMMAND: CommandSpec = {
  name: 'log',
  summary: "Show a machine's last update log: state, generation, error, pending reboot, output.",
  usage: LOG_USAGE,
  options: REMOTE_OPTIONS,
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

export async function log(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, LOG_COMMAND)
  const machine = machineArgument(p, 'log', LOG_USAGE)
  if (machine === undefined) throw new UsageError(`name the machine\nusage: ${LOG_USAGE}`)
  const result = await withClient(home, p, (c) => c.machineLog(machine))
  output(flag(p, 'json'), result, () => describeMachineLog(result))
}
