import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { signAuditHash } from '../../coordinator/audit.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import {
  type AuditEntry,
  type AuditRecord,
  type FleetStore,
  MAX_AUDIT_REQUEST_BYTES,
  StoreLimitError,
} from '../../coordinator/store.ts'
import { DOMAINS } from '../../keys/domains.ts'
import { PrivateKey } from '../../keys/identity.ts'
import { auditRecordSchema, MAX_AUDIT_RECORD_DETAIL } from '../../protocol/admin-results.ts'
import {
  AUDIT_HASH_BYTES,
  type AuditHashFields,
  auditHash,
  GENESIS_PREV_HASH,
  verifyAuditLog,
} from '../../protocol/audit-log.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import { type AdminOp, adminRequestSchema } from '../../protocol/messages.ts'
import { describeStores } from '../../testkit/stores.ts'

const coordinator = PrivateKey.generate()
const sign = signAuditHash(coordinator)
const alice = PrivateKey.generate()
const mallory = PrivateKey.generate()
const hex = (n: number) => randomBytes(n).toString('hex')

function request(signer: PrivateKey, body: AdminOp = { op: 'machines' }): Uint8Array {
  return sealEnvelope(
    adminRequestSchema,
    DOMAINS.adminRequest,
    { v: 1, nonce: hex(16), issuedAt: Date.now(), body },
    signer,
  )
}

function okEntry(n: number, signer = alice): AuditEntry {
  return {
    at: 1_000 + n,
    peerId: signer.toPeerId().toString(),
    actor: signer.publicKey.toString(),
    action: 'machines',
    outcome: 'ok',
    detail: `listed machines (${n})`,
    request: request(signer),
  }
}

/** A mix of every kind of record the coordinator writes. */
function entries(n: number): AuditEntry[] {
  return Array.from({ length: n }, (_, i): AuditEntry => {
    switch (i % 4) {
      case 1:
        // Denied because the signature does not verify: the bytes are kept as they came.
        return {
          ...okEntry(i),
          outcome: 'denied',
          actor: null,
          detail: 'bad signature',
          request: randomBytes(40),
        }
      case 2:
        return { ...okEntry(i, mallory), outcome: 'denied', detail: 'capability-missing: deploy' }
      case 3:
        return { ...okEntry(i), outcome: 'error', request: null, actor: null, detail: 'stream reset' }
      default:
        return okEntry(i)
    }
  })
}

let dir: string
let dbPath: string
let store: FleetStore
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-audit-'))
  dbPath = join(dir, 'coordinator.db')
  store = await openSqliteStore(dbPath)
})
afterEach(async () => {
  await store.close()
  await rm(dir, { recursive: true, force: true })
})

async function appendAll(list: AuditEntry[]): Promise<AuditRecord[]> {
  const out: AuditRecord[] = []
  for (const entry of list) out.push(await store.appendAudit(entry, sign))
  return out
}

const verifyAll = async () =>
  verifyAuditLog(await store.listAudit(0, 1000), { coordinator: coordinator.publicKey })

/** Tampers the way an attacker with the file would: a second handle, triggers dropped first. */
function tamper(sql: string, ...params: (string | number | Uint8Array)[]): void {
  const raw = new DatabaseSync(dbPath)
  try {
    raw.exec('DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete')
    raw.prepare(sql).run(...params)
  } finally {
    raw.close()
  }
}

describeStores((kind) => {
  // The file's own store, opened by the hooks above, gives way to this kind's.
  beforeEach(async () => {
    await store.close()
    store = await kind.open()
  })

  describe('appending', () => {
    it('chains records from a zero prevHash, gapless from 1, and the log verifies', async () => {
      const records = await appendAll(entries(12))
      expect(records.map((r) => r.index)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1))
      expect(records[0]?.prevHash).toEqual(GENESIS_PREV_HASH)
      for (let i = 1; i < records.length; i++) expect(records[i]?.prevHash).toEqual(records[i - 1]?.hash)
      for (const r of records) {
        expect(r.hash.byteLength).toBe(AUDIT_HASH_BYTES)
        expect(r.sig.byteLength).toBe(64)
      }
      expect(await store.listAudit(0, 1000)).toEqual(records)
      expect(await verifyAll()).toEqual({ ok: true, count: 12 })
    })

    it('cuts a detail longer than a record may carry, whoever appends it, so every page stays readable', async () => {
      // e.g. a rollout halt that lists every machine it rolled back
      const [long] = await appendAll([{ ...okEntry(0), detail: 'edge-1, '.repeat(2000) }])
      expect(long?.detail.length).toBe(MAX_AUDIT_RECORD_DETAIL)
      expect(long?.detail.endsWith('…')).toBe(true)
      const [listed] = await store.listAudit(0, 10)
      expect(auditRecordSchema.safeParse(listed).success).toBe(true)
      expect(await verifyAll()).toEqual({ ok: true, count: 1 })
    })

    it('pages, each page anchored on the last record of the one before', async () => {
      await appendAll(entries(10))
      const first = await store.listAudit(0, 4)
      const second = await store.listAudit(4, 4)
      expect(second.map((r) => r.index)).toEqual([5, 6, 7, 8])
      const opts = { coordinator: coordinator.publicKey }
      expect(verifyAuditLog(first, opts)).toEqual({ ok: true, count: 4 })
      expect(verifyAuditLog(second, { ...opts, previous: first[3] })).toEqual({ ok: true, count: 4 })
      // Without its anchor a later page is not a log from the start.
      expect(verifyAuditLog(second, opts)).toMatchObject({ ok: false, index: 1 })
      // A remembered head exposes records dropped from the tail.
      expect(verifyAuditLog([], { ...opts, previous: second[3] })).toEqual({ ok: true, count: 0 })
    })

    it('continues the chain after reopening the file', async () => {
      await appendAll(entries(3))
      await store.close()
      store = await kind.reopen()
      const next = await store.appendAudit(okEntry(99), sign)
      expect(next.index).toBe(4)
      expect(await verifyAll()).toEqual({ ok: true, count: 4 })
    })

    it('refuses an oversized request and a signer that returns no signature, appending nothing', async () => {
      const big = { ...okEntry(1), request: new Uint8Array(MAX_AUDIT_REQUEST_BYTES + 1) }
      await expect(store.appendAudit(big, sign)).rejects.toBeInstanceOf(StoreLimitError)
      await expect(store.appendAudit(okEntry(1), () => new Uint8Array(3))).rejects.toThrow(/64-byte/)
      expect(await store.listAudit(0, 10)).toEqual([])
      expect((await store.appendAudit(okEntry(1), sign)).index).toBe(1)
    })
  })
})

describe('the SQLite file', () => {
  it('refuses updates and deletes through SQL', async () => {
    await appendAll(entries(2))
    const raw = new DatabaseSync(dbPath)
    try {
      expect(() => raw.exec("UPDATE audit SET detail = 'x' WHERE idx = 1")).toThrow(/append-only/)
      expect(() => raw.exec('DELETE FROM audit WHERE idx = 2')).toThrow(/append-only/)
    } finally {
      raw.close()
    }
  })
})

describe('auditHash', () => {
  it('covers every field and nothing else', () => {
    const base: AuditHashFields = {
      index: 3,
      at: 12345,
      peerId: 'peer',
      actor: 'actor',
      action: 'revoke',
      outcome: 'ok',
      detail: 'd',
      request: new Uint8Array([1, 2]),
      prevHash: new Uint8Array(32).fill(7),
    }
    const h = auditHash(base)
    const variants: AuditHashFields[] = [
      { ...base, index: 4 },
      { ...base, at: 12346 },
      { ...base, peerId: 'peer2' },
      { ...base, actor: null },
      { ...base, action: 'audit' },
      { ...base, outcome: 'denied' },
      { ...base, detail: 'e' },
      { ...base, request: new Uint8Array([1, 3]) },
      { ...base, request: null },
      { ...base, prevHash: new Uint8Array(32).fill(8) },
    ]
    for (const v of variants) expect(auditHash(v)).not.toEqual(h)
    const withExtras = { ...base, hash: new Uint8Array(32), sig: new Uint8Array(64) }
    expect(auditHash(withExtras)).toEqual(h)
  })
})

describe('tampering is detected at the right record', () => {
  beforeEach(async () => {
    await appendAll(entries(8))
  })

  it('a changed field', async () => {
    tamper("UPDATE audit SET detail = 'nothing to see' WHERE idx = 5")
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 5,
      problem: expect.stringMatching(/altered/),
    })
  })

  it('a changed field with the hash recomputed (but not re-signable)', async () => {
    const [r] = await store.listAudit(5, 1)
    if (r === undefined) throw new Error('record 6 missing')
    const forged = { ...r, detail: 'nothing to see' }
    tamper('UPDATE audit SET detail = ?, hash = ? WHERE idx = 6', forged.detail, auditHash(forged))
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 6,
      problem: expect.stringMatching(/signature/),
    })
  })

  it('a deleted record', async () => {
    tamper('DELETE FROM audit WHERE idx = 4')
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 4,
      problem: expect.stringMatching(/missing/),
    })
  })

  it('a deleted first record', async () => {
    tamper('DELETE FROM audit WHERE idx = 1')
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 1,
      problem: expect.stringMatching(/missing/),
    })
  })

  it('records reordered in the database', async () => {
    tamper('UPDATE audit SET idx = 100 WHERE idx = 3')
    tamper('UPDATE audit SET idx = 3 WHERE idx = 4')
    tamper('UPDATE audit SET idx = 4 WHERE idx = 100')
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 3,
      problem: expect.stringMatching(/prevHash/),
    })
  })

  it('records reordered in an export', async () => {
    const records = await store.listAudit(0, 100)
    const swapped = [...records.slice(0, 2), records[3], records[2], ...records.slice(4)] as AuditRecord[]
    expect(verifyAuditLog(swapped, { coordinator: coordinator.publicKey })).toMatchObject({
      ok: false,
      index: 3,
      problem: expect.stringMatching(/missing/),
    })
    const repeated = [...records.slice(0, 3), records[1], ...records.slice(3)] as AuditRecord[]
    expect(verifyAuditLog(repeated, { coordinator: coordinator.publicKey })).toMatchObject({
      ok: false,
      index: 4,
      problem: expect.stringMatching(/out of order/),
    })
  })

  it('a record re-signed by another key', async () => {
    const [r] = await store.listAudit(6, 1)
    if (r === undefined) throw new Error('record 7 missing')
    tamper('UPDATE audit SET sig = ? WHERE idx = 7', signAuditHash(mallory)(r.hash))
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 7,
      problem: expect.stringMatching(/signature/),
    })
  })

  it('a log checked against the wrong coordinator key', async () => {
    const result = verifyAuditLog(await store.listAudit(0, 100), { coordinator: mallory.publicKey })
    expect(result).toMatchObject({ ok: false, index: 1, problem: expect.stringMatching(/signature/) })
  })

  it('swapped request bytes', async () => {
    tamper('UPDATE audit SET request = ? WHERE idx = 5', request(alice, { op: 'fleet-info' }))
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 5,
      problem: expect.stringMatching(/altered/),
    })
  })

  it('a tampered anchor', async () => {
    const [first, second] = await store.listAudit(0, 2)
    if (first === undefined || second === undefined) throw new Error('records missing')
    const result = verifyAuditLog([second], {
      coordinator: coordinator.publicKey,
      previous: { ...first, detail: 'changed' },
    })
    expect(result).toMatchObject({ ok: false, index: 1, problem: expect.stringMatching(/previous record/) })
  })
})

describe('ok records must carry their actor’s signed request', () => {
  // A coordinator that signs whatever it likes into its own log is what these catch.
  it('a request signed by someone other than the actor', async () => {
    await appendAll(entries(2))
    await store.appendAudit({ ...okEntry(3), request: request(mallory) }, sign)
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 3,
      problem: expect.stringMatching(/not by the recorded actor/),
    })
  })

  it('a request that does not open', async () => {
    await store.appendAudit({ ...okEntry(1), request: randomBytes(50) }, sign)
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 1,
      problem: expect.stringMatching(/not a valid signed admin request/),
    })
  })

  it('a signed request with no actor recorded', async () => {
    await store.appendAudit({ ...okEntry(1), actor: null }, sign)
    expect(await verifyAll()).toMatchObject({
      ok: false,
      index: 1,
      problem: expect.stringMatching(/no actor/),
    })
  })

  it('but denied records may hold requests that do not verify', async () => {
    await store.appendAudit({ ...okEntry(1), outcome: 'denied', request: randomBytes(50) }, sign)
    await store.appendAudit({ ...okEntry(2), outcome: 'denied', request: request(mallory) }, sign)
    await store.appendAudit({ ...okEntry(3), outcome: 'error', request: randomBytes(10) }, sign)
    expect(await verifyAll()).toEqual({ ok: true, count: 3 })
  })
})
