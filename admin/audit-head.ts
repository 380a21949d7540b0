/**
 * The audit head an admin remembers: the newest record `fleetmesh audit
 * --verify` found valid, in <home>/audit-head.json. The hash chain alone cannot
 * show that records were cut off its end (a log of n records cut to n − 2 is a
 * valid log), so the next verification also demands that the log still hold
 * that record with that hash (protocol/audit-log.ts). The head belongs to one
 * coordinator: under another one (a new fleet in this home) it is not used,
 * and replaced after the next successful verification.
 */
import { z } from 'zod'
import { PersistError, readJsonIfExists, toHex, writeJsonAtomic } from '../lib/index.ts'
import type { AuditHead, AuditRecord } from '../protocol/index.ts'
import { HomeError, paths } from './home.ts'

const headFileSchema = z.strictObject({
  /** The coordinator's peer id: whose log this is. */
  coordinator: z.string().min(1).max(128),
  index: z.number().int().min(1),
  hash: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits'),
  verifiedAt: z.number().int().nonnegative(),
})

/** The head remembered for `coordinator` (a peer id), or undefined when none is. */
export async function readAuditHead(dir: string, coordinator: string): Promise<AuditHead | undefined> {
  const file = paths(dir).auditHead
  let head: z.infer<typeof headFileSchema> | undefined
  try {
    head = await readJsonIfExists(file, headFileSchema)
  } catch (err) {
    if (!(err instanceof PersistError)) throw err
    throw new HomeError(
      `${err.message}. It remembers the audit log's newest verified record; remove it only if you accept ` +
        'the log as the coordinator now serves it',
      { cause: err },
    )
  }
  if (head === undefined || head.coordinator !== coordinator) return undefined
  return {
    index: head.index,
    hash: new Uint8Array(Buffer.from(head.hash, 'hex')),
    verifiedAt: head.verifiedAt,
  }
}

/** Remembers the newest of `records`, just verified, as the head of `coordinator`'s log. */
export async function rememberAuditHead(
  dir: string,
  coordinator: string,
  records: readonly AuditRecord[],
): Promise<void> {
  const newest = records.at(-1)
  if (newest === undefined) return
  await writeJsonAtomic(
    paths(dir).auditHead,
    { coordinator, index: newest.index, hash: toHex(newest.hash), verifiedAt: Date.now() },
    0o600,
  )
}
