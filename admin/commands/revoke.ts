/** `fleetmesh admin revoke`: revoke an admin certificate by serial, fleet-wide. */
import { type CommandSpec, flag, output, parseCommand, str, UsageError } from '../../lib/index.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export const REVOKE_COMMAND: CommandSpec = {
  name: 'admin revoke',
  summary: 'Revoke an admin certificate fleet-wide by its serial (printed by "admin grant").',
  usage: 'fleetmesh admin revoke <serial> [--reason "<why>"] [--coordinator <multiaddr>]... [--json]',
  options: {
    ...REMOTE_OPTIONS,
    reason: {
      type: 'string',
      value: '"<why>"',
      description: 'why, recorded in the audit log',
      default: 'revoked',
    },
  },
  examples: ['fleetmesh admin revoke 3f2a9c0e1b7d4e6f8a5b2c1d0e9f8a7b --reason "laptop lost"'],
}

export async function revoke(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, REVOKE_COMMAND)
  const serial = p.positionals[0]
  if (serial === undefined || !/^[0-9a-f]{32}$/.test(serial))
    throw new UsageError('give the certificate serial (32 hex digits) to revoke')
  const result = await withClient(home, p, (c) => c.revoke(serial, str(p, 'reason') ?? 'revoked'))
  output(flag(p, 'json'), result, () => `revoked certificate ${result.revoked}`)
}
