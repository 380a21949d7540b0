/** `fleetmesh audit`: the audit log, and with --verify its hash chain and signatures checked. */
import { peerIdFromString } from '@libp2p/peer-id'
import { DOMAINS, decodeCertificate, PublicKey } from '../../keys/index.ts'
import { type CommandSpec, flag, output, parseCommand, str, table, UsageError } from '../../lib/index.ts'
import {
  type AuditRecord,
  type AuditVerification,
  adminRequestSchema,
  openEnvelope,
  verifyAuditLog,
} from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { truncateAtWord } from '../format.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export const AUDIT_COMMAND: CommandSpec = {
  name: 'audit',
  summary: 'List the audit log and verify its hash chain and signatures.',
  usage: 'fleetmesh audit [--verify] [--limit N] [--coordinator <multiaddr>]... [--json]',
  options: {
    ...REMOTE_OPTIONS,
    limit: {
      type: 'string',
      value: 'N',
      description: 'how many of the newest records to list',
      default: '50',
    },
    verify: {
      type: 'boolean',
      description: 'check the hash chain and every signature of the whole log (always done with --json)',
    },
  },
  examples: ['fleetmesh audit --verify --limit 20'],
}

const PAGE = 1000
/** The DETAIL column's width when stdout is no terminal (a pipe, a file). */
const DETAIL_WIDTH = 80
/** The narrowest DETAIL column fitted to a terminal. */
const MIN_DETAIL_WIDTH = 30

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

/**
 * Admin names by public key. The coordinator records an admin as its key; the
 * name is in the certificate the admin sent with the request, which the
 * record keeps. Only requests the coordinator accepted (outcome "ok", so it
 * checked the chain) whose signature holds and whose certificate names the
 * signer are read, so a refused stranger cannot lend itself an admin's name.
 */
export function actorNames(records: readonly AuditRecord[]): Map<string, string> {
  const names = new Map<string, string>()
  for (const r of records) {
    if (r.outcome !== 'ok' || r.request === null || r.actor === null || names.has(r.actor)) continue
    try {
      const opened = openEnvelope(adminRequestSchema, DOMAINS.adminRequest, r.request)
      const leaf = opened.chain.at(-1)
      if (leaf === undefined || opened.signer.toString() !== r.actor) continue
      const cert = decodeCertificate(leaf)
      if (cert.subject.equals(opened.signer)) names.set(r.actor, cert.name)
    } catch {
      // an unreadable request names nobody; --verify reports it
    }
  }
  return names
}

function actorText(r: AuditRecord, names: ReadonlyMap<string, string>): string {
  if (r.actor === null) return `peer …${r.peerId.slice(-8)}`
  return names.get(r.actor) ?? `key ${r.actor.slice(0, 12)}…`
}

function verdictText(verdict: AuditVerification | null): string {
  if (verdict === null) return 'not verified: add --verify to check the hash chain and every signature'
  return verdict.ok
    ? `audit log verified: ${verdict.count} records, hash chain intact, every signature valid`
    : `AUDIT LOG INVALID at record ${verdict.index}: ${verdict.problem}`
}

export async function audit(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, AUDIT_COMMAND)
  const limit = Number(str(p, 'limit') ?? 50)
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive whole number')
  const json = flag(p, 'json')
  // JSON has always carried "verified" for scripts, so it is checked for --json too.
  const verify = flag(p, 'verify') || json
  return withClient(home, p, async (c) => {
    const records = await auditLog(c)
    const coordinatorKey = PublicKey.fromPeerId(peerIdFromString(c.home.fleet.coordinator.peerId))
    const verdict = verify ? verifyAuditLog(records, { coordinator: coordinatorKey }) : null
    const names = actorNames(records)
    const shown = records.slice(-limit)
    output(
      json,
      {
        verified: verdict,
        // bytes do not survive JSON: the request shows as its size, the hash as hex
        records: shown.map(({ prevHash: _prev, sig: _sig, request, hash, ...rest }) => ({
          ...rest,
          actorName: rest.actor === null ? null : (names.get(rest.actor) ?? null),
          request: request ? request.byteLength : null,
          hash: Buffer.from(hash).toString('hex'),
        })),
      },
      () => {
        const rows = shown.map((r) => [
          String(r.index),
          new Date(r.at).toISOString(),
          r.outcome,
          r.action,
          actorText(r, names),
          r.detail,
        ])
        return [
          auditTable(rows, process.stdout.isTTY ? process.stdout.columns : undefined),
          '',
          verdictText(verdict),
        ].join('\n')
      },
    )
    return verdict === null || verdict.ok ? 0 : 1
  })
}

/**
 * The audit table; the last column (DETAIL) is cut at a word boundary to fit
 * `columns` (a terminal's width), or 80 characters when there is no terminal.
 */
export function auditTable(rows: readonly string[][], columns?: number): string {
  const headers = ['#', 'TIME', 'OUTCOME', 'ACTION', 'ACTOR', 'DETAIL']
  const before = headers
    .slice(0, -1)
    .reduce((sum, h, i) => sum + Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)) + 2, 0)
  const width = columns === undefined ? DETAIL_WIDTH : Math.max(MIN_DETAIL_WIDTH, columns - before)
  return table(
    headers,
    rows.map((r) => [...r.slice(0, -1), truncateAtWord(r.at(-1) ?? '', width)]),
  )
}
