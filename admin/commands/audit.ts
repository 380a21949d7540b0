/**
 * `fleetmesh audit`: the audit log of changes and refusals; with --verify its
 * hash chain and signatures checked and its newest record remembered in the
 * admin's home (audit-head.ts), with --reads the read summaries kept apart.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { DOMAINS, decodeCertificate, PublicKey } from '../../keys/index.ts'
import { type CommandSpec, flag, output, parseCommand, str, table, UsageError } from '../../lib/index.ts'
import {
  type AuditHead,
  type AuditRead,
  type AuditRecord,
  type AuditVerification,
  adminRequestSchema,
  MAX_AUDIT_READS,
  openEnvelope,
  verifyAuditLog,
} from '../../protocol/index.ts'
import { readAuditHead, rememberAuditHead } from '../audit-head.ts'
import type { AdminClient } from '../client.ts'
import { truncateAtWord } from '../format.ts'
import type { AdminHome } from '../home.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export const AUDIT_COMMAND: CommandSpec = {
  name: 'audit',
  summary: 'List the audit log of changes and refusals, and verify its hash chain and signatures.',
  usage: 'fleetmesh audit [--verify] [--reads] [--limit N] [--coordinator <multiaddr>]... [--json]',
  options: {
    ...REMOTE_OPTIONS,
    limit: {
      type: 'string',
      value: 'N',
      description: 'how many of the newest records (and read summaries) to list',
      default: '50',
    },
    verify: {
      type: 'boolean',
      description:
        'check the hash chain and every signature of the whole log, and that it still holds the newest record verified from this home (always done with --json)',
    },
    reads: {
      type: 'boolean',
      description: `also list successful reads, counted per admin, op and hour (the newest ${MAX_AUDIT_READS} summaries at most)`,
    },
  },
  notes: [
    'The hash-chained log, signed by the coordinator, holds every change (deploy, upload, nix push, revoke,',
    'enrollment) and every refusal or failure. Refused requests are described (op, size, SHA-256, reason), not',
    'stored; refusals of requests without a valid certificate are rate-limited per peer and overall, those past',
    'the limit only counted (the record that reaches the limit says so, a later one how many were left out).',
    'Successful reads (machines, watch, audit, log, ping, doctor) are not chained: they are counted apart, one',
    'summary per admin, op and hour, in a bounded table (the oldest summaries are dropped). --reads shows them.',
    `--verify remembers the newest verified record in <home>/audit-head.json; a later log that no longer holds`,
    'it unchanged (records deleted or replaced) fails verification, naming the missing records.',
  ],
  examples: ['fleetmesh audit --verify --limit 20', 'fleetmesh audit --reads'],
}

const PAGE = 1000
/** The DETAIL column's width when stdout is no terminal (a pipe, a file). */
const DETAIL_WIDTH = 80
/** The narrowest DETAIL column fitted to a terminal. */
const MIN_DETAIL_WIDTH = 30

/**
 * The whole log, page by page: verification needs every link of the chain.
 * Pages are cut to fit a frame, so only an empty one ends the log.
 */
export async function auditLog(client: AdminClient): Promise<AuditRecord[]> {
  const records: AuditRecord[] = []
  for (let after = 0; ; ) {
    const page = await client.audit(after, PAGE)
    const last = page.at(-1)
    records.push(...page)
    // A page that does not move forward ends the listing; verification reports what is wrong with it.
    if (last === undefined || last.index <= after) return records
    after = last.index
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

function verdictText(verdict: AuditVerification | null, remembered: AuditHead | undefined): string {
  if (verdict === null) return 'not verified: add --verify to check the hash chain and every signature'
  if (!verdict.ok) return `AUDIT LOG INVALID at record ${verdict.index}: ${verdict.problem}`
  const extends_ =
    remembered === undefined
      ? ''
      : `, still holds record ${remembered.index} verified ${remembered.verifiedAt === undefined ? 'earlier' : new Date(remembered.verifiedAt).toISOString()}`
  return `audit log verified: ${verdict.count} records, hash chain intact, every signature valid${extends_}`
}

/** Verifies the whole log against the head remembered in `dir`, and remembers the new head if it holds. */
export async function verifyAndRemember(
  home: AdminHome,
  records: readonly AuditRecord[],
): Promise<{ verdict: AuditVerification; remembered: AuditHead | undefined }> {
  const { dir } = home
  const coordinatorPeerId = home.fleet.coordinator.peerId
  // every coordinator of the fleet signs what it appends (home.coordinators)
  const coordinatorPeerIds = home.coordinators.map((k) => k.peerId)
  const coordinator = PublicKey.fromPeerId(peerIdFromString(coordinatorPeerId))
  const remembered = await readAuditHead(dir, coordinatorPeerId)
  const verdict = verifyAuditLog(records, {
    coordinator,
    coordinators: coordinatorPeerIds.map((id) => PublicKey.fromPeerId(peerIdFromString(id))),
    ...(remembered === undefined ? {} : { remembered }),
  })
  if (verdict.ok) await rememberAuditHead(dir, coordinatorPeerId, records)
  return { verdict, remembered }
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
    const checked = verify ? await verifyAndRemember(c.home, records) : null
    const verdict = checked?.verdict ?? null
    const reads = flag(p, 'reads') ? await c.auditReads(Math.min(limit, MAX_AUDIT_READS)) : undefined
    const names = actorNames(records)
    const shown = records.slice(-limit)
    output(
      json,
      {
        verified: verdict,
        ...(reads === undefined ? {} : { reads }),
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
          ...(reads === undefined ? [] : ['', readsText(reads, names)]),
          '',
          verdictText(verdict, checked?.remembered),
        ].join('\n')
      },
    )
    return verdict === null || verdict.ok ? 0 : 1
  })
}

/** Read summaries, newest first; they are not part of the hash chain and not verified. */
export function readsText(reads: readonly AuditRead[], names: ReadonlyMap<string, string>): string {
  if (reads.length === 0) return 'reads: none counted'
  const rows = reads.map((r) => [
    new Date(r.windowStart).toISOString().replace(/:\d\d\.\d+Z$/, 'Z'),
    new Date(r.lastAt).toISOString(),
    r.action,
    names.get(r.actor) ?? `key ${r.actor.slice(0, 12)}…`,
    String(r.count),
    r.detail,
  ])
  return [
    'reads (counted per admin, op and hour; not hash-chained):',
    table(['HOUR', 'LAST', 'ACTION', 'ACTOR', 'COUNT', 'DETAIL'], rows),
  ].join('\n')
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
