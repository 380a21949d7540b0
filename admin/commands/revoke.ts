/**
 * `fleetmesh admin revoke`: revoke an admin certificate by serial, fleet-wide.
 * The CLI fetches the coordinator's signed revocation list, checks it from the
 * fleet root, and signs the next entry on top of its head; the coordinator
 * stores it and passes it to every agent. If another admin's entry took that
 * place first, it signs again once on the new head.
 */
import { type CommandSpec, flag, output, parseCommand, str, UsageError } from '../../lib/index.ts'
import { MAX_REVOCATIONS, type RevocationHead, sealRevocation } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError } from '../client.ts'
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
      description: 'why, recorded in the signed revocation list and the audit log',
      default: 'revoked',
    },
  },
  notes: [
    "Signs the next entry of the fleet's revocation list. Agents get it from the coordinator before any",
    'manifest, and from then on refuse manifests signed with the certificate, or any it issued, as "revoked".',
    'Running it again for a revoked serial changes nothing. A serial revoked by an older fleetmesh (known',
    'to the coordinator only) is revoked again, signed, so agents learn of it too.',
  ],
  examples: ['fleetmesh admin revoke 3f2a9c0e1b7d4e6f8a5b2c1d0e9f8a7b --reason "laptop lost"'],
}

interface Revoked {
  revoked: string
  /** The revocation list entry that revokes it; null when the coordinator keeps no signed list. */
  entry: number | null
  already: boolean
}

export async function revoke(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, REVOKE_COMMAND)
  const serial = p.positionals[0]
  if (serial === undefined || !/^[0-9a-f]{32}$/.test(serial))
    throw new UsageError('give the certificate serial (32 hex digits) to revoke')
  const reason = str(p, 'reason') ?? 'revoked'
  if (reason.length > 256) throw new UsageError('--reason: at most 256 characters')
  const result = await withClient(home, p, (c) => revokeSigned(c, serial, reason))
  output(flag(p, 'json'), result, () => {
    if (result.entry === null)
      return (
        `revoked certificate ${serial} on the coordinator only: it is older than the signed revocation list, ` +
        'so agents do not learn of it. Upgrade the coordinator and run this again'
      )
    if (result.already)
      return `certificate ${serial} was already revoked (revocation list entry ${result.entry})`
    return `revoked certificate ${serial} (revocation list entry ${result.entry}); agents learn of it when they next connect`
  })
}

async function revokeSigned(client: AdminClient, serial: string, reason: string): Promise<Revoked> {
  for (let attempt = 0; ; attempt++) {
    const { list, supported } = await client.revocationList()
    if (!supported) {
      await client.revoke(serial, reason)
      return { revoked: serial, entry: null, already: false }
    }
    const held = list.find(serial)
    if (held !== undefined) return { revoked: serial, entry: held.entry.seq, already: true }
    const head: RevocationHead = list.head
    if (head.seq >= MAX_REVOCATIONS)
      throw new AdminRequestError(
        'revocations-full',
        `the revocation list holds its maximum of ${MAX_REVOCATIONS} entries; no further certificate can be revoked. ` +
          'Move the fleet to a new root key instead',
      )
    const { home } = client
    const entry = sealRevocation(
      {
        v: 1,
        fleetId: home.fleet.fleetId,
        seq: head.seq + 1,
        prev: head.hash,
        serial,
        reason,
        // never before the entry it follows: agents refuse a list whose times go back
        at: Math.max(Date.now(), list.lastAt),
      },
      home.key,
      home.chain,
    )
    try {
      const done = await client.revokeSigned(serial, reason, entry)
      return { revoked: done.revoked, entry: done.head.seq, already: false }
    } catch (err) {
      if (!(err instanceof AdminRequestError && err.code === 'revocation-conflict' && attempt === 0))
        throw err
    }
  }
}
