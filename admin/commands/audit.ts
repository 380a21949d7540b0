/** `fleetmesh audit`: the audit log, with its hash chain and signatures verified. */
import { peerIdFromString } from '@libp2p/peer-id'
import { PublicKey } from '../../keys/index.ts'
import { flag, output, parseCommand, str, table, UsageError } from '../../lib/index.ts'
import { type AuditRecord, verifyAuditLog } from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

const PAGE = 1000

/** The whole log, page by page: verification needs every link of the chain. */
async function auditLog(client: AdminClient): Promise<AuditRecord[]> {
  const records: AuditRecord[] = []
  for (let after = 0; ; ) {
    const page = await client.audit(after, PAGE)
    records.push(...page)
    if (page.length < PAGE) return records
    after = (page[page.length - 1] as AuditRecord).index
  }
}

export async function audit(argv: string[], home: string): Promise<number> {
  const p = parseCommand(
    argv,
    { ...REMOTE_OPTIONS, limit: { type: 'string' }, verify: { type: 'boolean' } },
    'fleetmesh audit [--verify] [--limit N] [--json]',
  )
  const limit = Number(str(p, 'limit') ?? 50)
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive whole number')
  return withClient(home, p, async (c) => {
    const records = await auditLog(c)
    const coordinatorKey = PublicKey.fromPeerId(peerIdFromString(c.home.fleet.coordinator.peerId))
    const verdict = verifyAuditLog(records, { coordinator: coordinatorKey })
    const shown = records.slice(-limit)
    output(
      flag(p, 'json'),
      {
        verified: verdict,
        // bytes do not survive JSON: the request shows as its size, the hash as hex
        records: shown.map(({ prevHash: _prev, sig: _sig, request, hash, ...rest }) => ({
          ...rest,
          request: request ? request.byteLength : null,
          hash: Buffer.from(hash).toString('hex'),
        })),
      },
      () =>
        [
          table(
            ['#', 'TIME', 'OUTCOME', 'ACTION', 'ACTOR', 'DETAIL'],
            shown.map((r) => [
              String(r.index),
              new Date(r.at).toISOString(),
              r.outcome,
              r.action,
              r.actor?.slice(0, 12) ?? `peer ${r.peerId.slice(-8)}`,
              r.detail.slice(0, 80),
            ]),
          ),
          '',
          verdict.ok
            ? `audit log verified: ${verdict.count} records, hash chain intact, every signature valid`
            : `AUDIT LOG INVALID at record ${verdict.index}: ${verdict.problem}`,
        ].join('\n'),
    )
    // The log is always verified; --verify only states that intent in scripts.
    return verdict.ok ? 0 : 1
  })
}
