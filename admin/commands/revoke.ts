/** `fleetmesh admin revoke`: revoke an admin certificate by serial, fleet-wide. */
import { flag, output, parseCommand, str, UsageError } from '../../lib/index.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export async function revoke(argv: string[], home: string): Promise<void> {
  const p = parseCommand(
    argv,
    { ...REMOTE_OPTIONS, reason: { type: 'string' } },
    'fleetmesh admin revoke <serial> [--reason "<why>"] [--json]   (the serial is printed by "admin grant")',
  )
  const serial = p.positionals[0]
  if (serial === undefined || !/^[0-9a-f]{32}$/.test(serial))
    throw new UsageError('give the certificate serial (32 hex digits) to revoke')
  const result = await withClient(home, p, (c) => c.revoke(serial, str(p, 'reason') ?? 'revoked'))
  output(flag(p, 'json'), result, () => `revoked certificate ${result.revoked}`)
}
