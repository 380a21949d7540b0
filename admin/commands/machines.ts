/** `fleetmesh machines`: the machines this admin may see, with their update state. */
import { flag, output, parseCommand } from '../../lib/index.ts'
import { machinesTable } from '../format.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export async function machines(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, { ...REMOTE_OPTIONS }, 'fleetmesh machines [--json]')
  const result = await withClient(home, p, (c) => c.machines())
  output(flag(p, 'json'), result, () =>
    result.length === 0 ? 'no machines enrolled yet' : machinesTable(result),
  )
}
