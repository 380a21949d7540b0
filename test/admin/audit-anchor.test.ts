/**
 * What the audit log keeps and what `fleetmesh audit --verify` remembers, with
 * a real coordinator process: the admin's home remembers the newest verified
 * record, so a log whose tail was deleted (trigger dropped, file edited while
 * the coordinator was stopped) fails the next verification, naming the missing
 * records; and polling reads is counted apart from the chained log.
 */
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AdminClient } from '../../admin/client.ts'
import { loadAdminHome, paths } from '../../admin/home.ts'
import { signAuditHash } from '../../coordinator/audit.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import { PrivateKey } from '../../keys/identity.ts'
import { type AuditRecord, verifyAuditLog } from '../../protocol/audit-log.ts'
import { TestFleet } from '../../testkit/harness.ts'

interface AuditJson {
  verified: { ok: boolean; index?: number; problem?: string }
  records: { index: number; action: string; outcome: string }[]
  reads?: { action: string; count: number; actor: string }[]
}

let fleet: TestFleet
/** A fresh fleet with a running coordinator for each test of the calling describe block. */
function withFleet(): void {
  beforeEach(async () => {
    fleet = await TestFleet.create()
    await fleet.startCoordinator()
  })
  afterEach(async () => {
    await fleet.stop()
  })
}

/** Runs `fn` with this fleet's admin client, in this process. */
async function asAdmin<T>(fn: (c: AdminClient) => Promise<T>): Promise<T> {
  const client = await AdminClient.connect(await loadAdminHome(fleet.home))
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}

/** Changes that go to the chained log: revocations of made-up serials. */
const revoke = (n: number) =>
  asAdmin(async (c) => {
    for (let i = 0; i < n; i++) await c.revoke(randomBytes(16).toString('hex'), `test ${i}`)
  })

/** Deletes the audit records above `keep`, as an attacker with the file would: trigger dropped, then put back. */
function deleteTail(keep: number): void {
  const db = new DatabaseSync(fleet.storePath)
  try {
    const trigger = db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'audit_no_delete'").get()?.sql
    db.exec('DROP TRIGGER audit_no_delete')
    db.prepare('DELETE FROM audit WHERE idx > ?').run(keep)
    db.exec(String(trigger))
  } finally {
    db.close()
  }
}

async function restartCoordinator(edit: () => void): Promise<void> {
  await fleet.coordinator?.kill('SIGTERM')
  edit()
  await fleet.startCoordinator()
}

describe('audit --verify', () => {
  withFleet()
  it('fails once records it verified are deleted from the end, or replaced, naming them', async () => {
    await revoke(4)
    const first = await fleet.cli(['audit', '--verify'])
    expect(first.code, first.stdout + first.stderr).toBe(0)
    const head = JSON.parse(await readFile(paths(fleet.home).auditHead, 'utf8')) as { index: number }
    expect(head.index).toBe(4)

    await restartCoordinator(() => deleteTail(2))
    const cut = await fleet.cli(['audit', '--verify'])
    expect(cut.code).toBe(1)
    expect(cut.stdout).toContain('AUDIT LOG INVALID at record 3: records 3–4 are missing')
    expect(cut.stdout).toContain('the log ends at record 2')

    // The coordinator writes on from record 2: records 3 and 4 exist again, but are others.
    await revoke(3)
    const json = await fleet.json<AuditJson>(['audit']).catch((err: Error) => err)
    expect(json).toBeInstanceOf(Error)
    const rewritten = await fleet.cli(['audit', '--verify'])
    expect(rewritten.code).toBe(1)
    expect(rewritten.stdout).toContain('AUDIT LOG INVALID at record 4: record 4 is not the one verified on')
    // A failed verification leaves the remembered head as it was.
    expect(JSON.parse(await readFile(paths(fleet.home).auditHead, 'utf8'))).toEqual(head)
  }, 120_000)

  it('accepts a log that grew, and remembers its new head', async () => {
    await revoke(2)
    expect((await fleet.cli(['audit', '--verify'])).code).toBe(0)
    await revoke(1)
    const grown = await fleet.cli(['audit', '--verify'])
    expect(grown.code, grown.stdout).toBe(0)
    expect(grown.stdout).toMatch(/audit log verified: 3 records, .*still holds record 2 verified/)
    const head = JSON.parse(await readFile(paths(fleet.home).auditHead, 'utf8')) as { index: number }
    expect(head.index).toBe(3)
  }, 120_000)
})

describe('reads', () => {
  withFleet()
  it('polling machines 50 times adds no record to the chained log, only a count', async () => {
    await revoke(1)
    await asAdmin(async (c) => {
      for (let i = 0; i < 50; i++) await c.machines()
    })
    const chained = await fleet.json<AuditJson>(['audit', '--limit', '1000'])
    expect(chained.verified.ok).toBe(true)
    expect(chained.records.map((r) => r.action)).toEqual(['revoke'])
    expect(chained.reads).toBeUndefined()
    const log = await fleet.json<AuditJson>(['audit', '--reads', '--limit', '1000'])
    const polled = log.reads?.find((r) => r.action === 'machines')
    expect(polled?.count).toBe(50)
    const text = await fleet.cli(['audit', '--reads'])
    expect(text.stdout).toMatch(/reads \(counted per admin, op and hour; not hash-chained\)/)
    expect(text.stdout).toMatch(/machines\s+owner\s+50/)
  }, 120_000)
})

describe('verifyAuditLog with a remembered head', () => {
  it('names the records missing after it, and a changed record at its index', async () => {
    const coordinator = PrivateKey.generate()
    const store = await openSqliteStore(':memory:')
    const records: AuditRecord[] = []
    for (let i = 0; i < 5; i++) {
      records.push(
        await store.appendAudit(
          { at: i, peerId: 'p', actor: null, action: 'x', outcome: 'denied', detail: '', request: null },
          signAuditHash(coordinator),
        ),
      )
    }
    await store.close()
    const last = records[4] as AuditRecord
    const remembered = { index: 5, hash: last.hash, verifiedAt: 0 }
    const opts = { coordinator: coordinator.publicKey, remembered }
    expect(verifyAuditLog(records, opts)).toEqual({ ok: true, count: 5 })
    const cut = verifyAuditLog(records.slice(0, 3), opts)
    expect(cut).toMatchObject({ ok: false, index: 4 })
    expect(!cut.ok && cut.problem).toContain('records 4–5 are missing')
    const one = verifyAuditLog(records.slice(0, 4), opts)
    expect(!one.ok && one.problem).toContain('record 5 is missing')
    const other = verifyAuditLog(records, {
      ...opts,
      remembered: { ...remembered, hash: new Uint8Array(32) },
    })
    expect(other).toMatchObject({ ok: false, index: 5 })
  })
})
