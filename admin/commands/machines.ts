/** `fleetmesh machines`: the machines this admin may see, with their update state. */
import { type CommandSpec, flag, output, parseCommand, terminalWidth } from '../../lib/index.ts'
import { machinesTable } from '../format.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export const MACHINES_COMMAND: CommandSpec = {
  name: 'machines',
  summary: 'List machines: tags, online, generations, state, last seen, path.',
  usage: 'fleetmesh machines [--coordinator <multiaddr>]... [--json]',
  options: REMOTE_OPTIONS,
  notes: [
    'The table fits $COLUMNS if set, else the terminal; piped, rows are whole. --json is never shortened.',
  ],
  examples: ['fleetmesh machines --json'],
}

export async function machines(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, MACHINES_COMMAND)
  const result = await withClient(home, p, (c) => c.machines())
  output(flag(p, 'json'), result, () =>
    result.length === 0 ? 'no machines enrolled yet' : machinesTable(result, terminalWidth()),
  )
}
