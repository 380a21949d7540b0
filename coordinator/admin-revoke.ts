/**
 * The admin ops on revocations: `revoke` (with a signed entry of the revocation
 * list, which agents learn; without one, from an older admin CLI, for this
 * coordinator only) and `revocations` (the list, a page at a time), each with
 * its result and the detail its audit record keeps. admin-rpc.ts
 * authenticates, audits and answers; revocations.ts does the work.
 */
import type { PublicKey } from '../keys/index.ts'
import {
  type AdminOp,
  type OpenedRevocation,
  openRevocation,
  RevocationError,
  type RevocationHead,
  type RevocationsPage,
} from '../protocol/index.ts'
import { AdminDenied } from './admin-context.ts'
import { appendRevocation, type RevocationsInit, revocationBatch } from './revocations.ts'
import { StoreConflictError } from './store.ts'

/** How far an entry's time may lie from the coordinator's clock: the admin request window. */
const ENTRY_WINDOW_MS = 5 * 60_000

export interface RevokeOutcome {
  result: { revoked: string; head?: RevocationHead }
  /** For the audit log */
  detail: string
}

/** `revoke`, asked by `signer`; refusals are AdminDenied ("revocation-conflict": sign again on the new head). */
export async function runRevokeOp(
  init: RevocationsInit,
  signer: PublicKey,
  body: Extract<AdminOp, { op: 'revoke' }>,
  now = Date.now(),
): Promise<RevokeOutcome> {
  if (body.entry === undefined) {
    await init.store.revoke(body.serial, body.reason, now)
    return {
      result: { revoked: body.serial },
      detail: `serial ${body.serial}: ${body.reason} (unsigned: this coordinator enforces it, agents never learn of it)`,
    }
  }
  const envelope = body.entry
  let opened: OpenedRevocation
  try {
    opened = openRevocation(envelope)
  } catch (err) {
    throw denied(err)
  }
  const { entry } = opened
  if (entry.serial !== body.serial || entry.reason !== body.reason)
    throw new AdminDenied(
      'bad-request',
      'the signed revocation entry names another serial or reason than the request',
    )
  if (!opened.signer.equals(signer))
    throw new AdminDenied('bad-request', 'a revocation entry must be signed by the admin who sends it')
  if (Math.abs(entry.at - now) > ENTRY_WINDOW_MS)
    throw new AdminDenied(
      'stale-entry',
      `the revocation entry is dated ${new Date(entry.at).toISOString()}, more than 5 min from this coordinator's clock; ` +
        "check this machine's clock",
    )
  const state = await init.store.revocationLog.state()
  if (state.revoked.has(entry.serial))
    throw new AdminDenied(
      'already-revoked',
      `certificate ${entry.serial} is already on the signed revocation list`,
    )
  try {
    await appendRevocation(init, opened, state)
  } catch (err) {
    throw denied(err)
  }
  return {
    result: { revoked: entry.serial, head: { seq: entry.seq, hash: opened.hash } },
    detail: `serial ${entry.serial}: ${entry.reason} (revocation list entry ${entry.seq})`,
  }
}

/** `revocations`: the list's head and the entries after `after` that fit one answer. */
export async function revocationsPage(
  init: RevocationsInit,
  body: Extract<AdminOp, { op: 'revocations' }>,
): Promise<RevocationsPage> {
  const { head } = await init.store.revocationLog.state()
  const rows = await revocationBatch(init.store, body.after, body.limit)
  return { head, entries: rows.map((r) => r.envelope) }
}

/** A refusal as the admin is told it; "revocation-conflict" (another entry came first) is the one the CLI signs again on. */
function denied(err: unknown): unknown {
  if (err instanceof StoreConflictError) return new AdminDenied(err.code, err.message)
  if (!(err instanceof RevocationError)) return err
  return new AdminDenied(err.code === 'not-next' ? 'revocation-conflict' : err.code, err.message)
}
