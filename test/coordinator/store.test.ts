import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { MAX_SEQUENCE_STEP } from '../../coordinator/sequence-rule.ts'
import { openSqliteStore, SCHEMA_VERSION } from '../../coordinator/sqlite-store.ts'
import {
  type EnrollMachineInput,
  type FleetStore,
  type NewManifest,
  type StatusRecord,
  StoreConflictError,
  StoreSchemaError,
} from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import type { StatusReport } from '../../protocol/messages.ts'
import { sampleManifest, sampleStatus } from '../../testkit/fixtures.ts'
import { manifestRecord } from '../../testkit/manifest-record.ts'
import { describeStores } from '../../testkit/stores.ts'

const hex = (n: number) => randomBytes(n).toString('hex')

let store: FleetStore

function peer(): { peerId: string; publicKey: string } {
  const key = PrivateKey.generate()
  return { peerId: key.toPeerId().toString(), publicKey: key.publicKey.toString() }
}

function enrollInput(name: string, overrides: Partial<EnrollMachineInput> = {}): EnrollMachineInput {
  return { name, ...peer(), tags: ['lab'], facts: { os: 'linux' }, nonce: hex(16), at: 1000, ...overrides }
}

async function conflict(promise: Promise<unknown>): Promise<StoreConflictError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(StoreConflictError)
  return err as StoreConflictError
}

const admin = PrivateKey.generate()

function newManifest(sequence: number, machines: string[] = ['edge-1']): NewManifest {
  const manifest = sampleManifest({ sequence, targets: { machines, tags: [] } })
  return manifestRecord(manifest, admin)
}

function status(machine: string, seq: number, overrides: Partial<StatusReport> = {}): StatusRecord {
  return {
    machine,
    seq,
    report: sampleStatus({ machine, seq, ...overrides }),
    envelope: new Uint8Array(randomBytes(80)),
    receivedAt: 5000 + seq,
  }
}

describeStores((kind) => {
  beforeEach(async () => {
    store = await kind.open()
  })
  afterEach(async () => {
    await store.close()
  })

  describe('fleet', () => {
    it('is stored once, idempotently, and refuses a different fleet', async () => {
      expect(await store.getFleet()).toBeUndefined()
      await store.initFleet('acme', 'root-key')
      await store.initFleet('acme', 'root-key')
      expect(await store.getFleet()).toEqual({ fleetId: 'acme', fleetRoot: 'root-key' })
      expect((await conflict(store.initFleet('acme', 'other-root'))).code).toBe('fleet-mismatch')
      expect((await conflict(store.initFleet('other', 'root-key'))).code).toBe('fleet-mismatch')
    })
  })

  describe('enrollment', () => {
    it('enrolls a machine and finds it by name and by peer', async () => {
      const input = enrollInput('edge-1')
      const record = await store.enrollMachine(input)
      expect(record).toEqual({
        name: 'edge-1',
        peerId: input.peerId,
        publicKey: input.publicKey,
        tags: ['lab'],
        facts: { os: 'linux' },
        enrolledAt: 1000,
        lastSeen: null,
        path: null,
        transport: null,
        agentVersion: null,
      })
      expect(await store.getMachine('edge-1')).toEqual(record)
      expect(await store.getMachineByPeer(input.peerId)).toEqual(record)
      expect(await store.getMachine('nope')).toBeUndefined()
      expect(await store.getMachineByPeer('nope')).toBeUndefined()
    })

    it('refuses a token used before, even for another machine', async () => {
      const first = enrollInput('edge-1')
      await store.enrollMachine(first)
      const err = await conflict(store.enrollMachine(enrollInput('edge-2', { nonce: first.nonce })))
      expect(err.code).toBe('token-used')
      expect(err.message).toContain(first.nonce)
      expect(await store.getMachine('edge-2')).toBeUndefined()
    })

    it('refuses a name held by another peer', async () => {
      const first = enrollInput('edge-1')
      await store.enrollMachine(first)
      const err = await conflict(store.enrollMachine(enrollInput('edge-1')))
      expect(err.code).toBe('name-taken')
      expect(err.message).toContain(first.peerId)
      expect((await store.getMachine('edge-1'))?.peerId).toBe(first.peerId)
    })

    it('lets the same peer re-enroll under its name with a fresh token, updating tags and facts', async () => {
      const first = enrollInput('edge-1')
      await store.enrollMachine(first)
      await store.touchMachine('edge-1', { lastSeen: 1500, path: 'relayed' })
      const again = await store.enrollMachine({
        ...first,
        nonce: hex(16),
        tags: ['prod'],
        facts: { os: 'nixos' },
        at: 2000,
      })
      expect(again).toMatchObject({
        tags: ['prod'],
        facts: { os: 'nixos' },
        enrolledAt: 2000,
        lastSeen: 1500,
      })
      expect((await store.listMachines()).length).toBe(1)
      // …but never with the token it already used.
      expect((await conflict(store.enrollMachine({ ...first, tags: ['x'] }))).code).toBe('token-used')
    })

    it('refuses a peer already enrolled under another name', async () => {
      const first = enrollInput('edge-1')
      await store.enrollMachine(first)
      const err = await conflict(store.enrollMachine({ ...first, name: 'edge-2', nonce: hex(16) }))
      expect(err.code).toBe('peer-taken')
      expect(err.message).toContain('edge-1')
    })

    it('leaves the token unused when an enrollment is refused', async () => {
      await store.enrollMachine(enrollInput('edge-1'))
      const refused = enrollInput('edge-1')
      expect((await conflict(store.enrollMachine(refused))).code).toBe('name-taken')
      const record = await store.enrollMachine({ ...refused, name: 'edge-2' })
      expect(record.peerId).toBe(refused.peerId)
    })

    it('lists machines by name and records when and how they were last seen', async () => {
      for (const name of ['gamma', 'alpha', 'beta']) await store.enrollMachine(enrollInput(name))
      expect((await store.listMachines()).map((m) => m.name)).toEqual(['alpha', 'beta', 'gamma'])
      await store.touchMachine('beta', { lastSeen: 4242, path: 'direct', transport: 'quic' })
      expect(await store.getMachine('beta')).toMatchObject({
        lastSeen: 4242,
        path: 'direct',
        transport: 'quic',
      })
      await store.touchMachine('beta', { lastSeen: 4343, path: 'relayed', transport: 'tcp' })
      expect(await store.getMachine('beta')).toMatchObject({ path: 'relayed', transport: 'tcp' })
      // a touch that does not know the transport (a caller from before it) does not leave a stale one
      await store.touchMachine('beta', { lastSeen: 4444, path: 'direct' })
      expect(await store.getMachine('beta')).toMatchObject({ path: 'direct', transport: null })
      expect((await conflict(store.touchMachine('delta', { lastSeen: 1, path: null }))).code).toBe(
        'unknown-machine',
      )
    })
  })

  describe('manifests and desired state', () => {
    beforeEach(async () => {
      for (const name of ['edge-1', 'edge-2', 'edge-3']) await store.enrollMachine(enrollInput(name))
    })

    it('stores the envelope byte for byte and fans desired state out to the resolved machines', async () => {
      expect(await store.maxSequence()).toBe(0)
      const m1 = newManifest(1, ['edge-1', 'edge-2'])
      const stored = await store.addManifest(m1, ['edge-2', 'edge-1', 'edge-2'])
      expect(stored).toEqual({ ...m1, machines: ['edge-1', 'edge-2'] })
      expect(await store.maxSequence()).toBe(1)
      expect(await store.getManifest(m1.id)).toEqual(stored)
      expect((await store.getDesired('edge-1'))?.envelope).toEqual(m1.envelope)
      expect((await store.getDesired('edge-2'))?.id).toBe(m1.id)
      expect(await store.getDesired('edge-3')).toBeUndefined()

      const m2 = newManifest(5, ['edge-2', 'edge-3'])
      await store.addManifest(m2, ['edge-2', 'edge-3'])
      expect((await store.getDesired('edge-1'))?.id).toBe(m1.id)
      expect((await store.getDesired('edge-2'))?.id).toBe(m2.id)
      expect((await store.getDesired('edge-3'))?.id).toBe(m2.id)
      expect((await store.listManifests(10)).map((m) => m.sequence)).toEqual([5, 1])
      expect((await store.listManifests(1)).map((m) => m.sequence)).toEqual([5])
      expect(await store.getManifest(hex(16))).toBeUndefined()
    })

    it('refuses a sequence not above the highest stored, and changes nothing', async () => {
      await store.addManifest(newManifest(3), ['edge-1'])
      for (const sequence of [3, 2]) {
        const stale = newManifest(sequence, ['edge-2'])
        const err = await conflict(store.addManifest(stale, ['edge-2']))
        expect(err.code).toBe('stale-sequence')
        expect(err.message).toContain('4')
        expect(await store.getManifest(stale.id)).toBeUndefined()
      }
      expect(await store.getDesired('edge-2')).toBeUndefined()
      expect(await store.maxSequence()).toBe(3)
    })

    it('refuses a sequence far above the highest stored, which would freeze the fleet', async () => {
      await store.addManifest(newManifest(3), ['edge-1'])
      // any deployer could otherwise take 2^53-1 and leave no sequence for anyone after it
      const jump = newManifest(Number.MAX_SAFE_INTEGER, ['edge-2'])
      const err = await conflict(store.addManifest(jump, ['edge-2']))
      expect(err.code).toBe('sequence-jump')
      expect(err.message).toContain('sequence 4')
      expect(await store.maxSequence()).toBe(3)
      await store.addManifest(newManifest(3 + MAX_SEQUENCE_STEP, ['edge-2']), ['edge-2'])
      expect(await store.maxSequence()).toBe(3 + MAX_SEQUENCE_STEP)
    })

    it('refuses unknown target machines without storing the manifest', async () => {
      const m = newManifest(1, ['edge-1', 'ghost'])
      const err = await conflict(store.addManifest(m, ['edge-1', 'ghost']))
      expect(err.code).toBe('unknown-machine')
      expect(err.message).toContain('ghost')
      expect(await store.maxSequence()).toBe(0)
      expect(await store.getDesired('edge-1')).toBeUndefined()
    })
  })

  describe('status reports', () => {
    beforeEach(async () => {
      for (const name of ['edge-1', 'edge-2']) await store.enrollMachine(enrollInput(name))
    })

    it('stores a report once; a repeat is a duplicate, another report under its seq a conflict', async () => {
      const first = status('edge-1', 1)
      expect(await store.recordStatus(first)).toBe('stored')
      expect(await store.recordStatus({ ...first, receivedAt: 9999 })).toBe('duplicate')
      const other = status('edge-1', 1, { state: 'failed' })
      expect((await conflict(store.recordStatus(other))).code).toBe('seq-reused')
      expect(await store.latestStatus('edge-1')).toEqual(first)
      expect(await store.statusHistory('edge-1', 10)).toEqual([first])
    })

    it('moves the latest status only forward, keeping late reports in history', async () => {
      const s1 = status('edge-1', 1)
      const s3 = status('edge-1', 3)
      const s2 = status('edge-1', 2)
      for (const s of [s1, s3, s2]) expect(await store.recordStatus(s)).toBe('stored')
      expect(await store.lastStatusSeq('edge-1')).toBe(3)
      expect(await store.latestStatus('edge-1')).toEqual(s3)
      expect((await store.statusHistory('edge-1', 10)).map((s) => s.seq)).toEqual([3, 2, 1])
      expect((await store.statusHistory('edge-1', 2)).map((s) => s.seq)).toEqual([3, 2])

      const other = status('edge-2', 7)
      await store.recordStatus(other)
      const latest = await store.latestStatuses()
      expect([...latest.keys()].sort()).toEqual(['edge-1', 'edge-2'])
      expect(latest.get('edge-2')).toEqual(other)
      expect(latest.get('edge-1')?.envelope).toEqual(s3.envelope)
    })

    it('reports nothing for a machine without reports, and refuses reports from unknown machines', async () => {
      expect(await store.lastStatusSeq('edge-2')).toBe(0)
      expect(await store.latestStatus('edge-2')).toBeUndefined()
      expect(await store.statusHistory('edge-2', 5)).toEqual([])
      expect((await conflict(store.recordStatus(status('ghost', 1)))).code).toBe('unknown-machine')
    })

    it('group commit: a batch stores each report with its own outcome; a bad one does not sink the rest', async () => {
      const first = status('edge-1', 1)
      await store.recordStatus(first)
      const outcomes = await store.recordStatuses([
        first,
        status('ghost', 1),
        status('edge-1', 2),
        status('edge-2', 1),
      ])
      expect(outcomes.slice(0, 1)).toEqual(['duplicate'])
      expect(outcomes[1]).toBeInstanceOf(StoreConflictError)
      expect(outcomes.slice(2)).toEqual(['stored', 'stored'])
      expect(await store.lastStatusSeq('edge-1')).toBe(2)
      expect(await store.lastStatusSeq('edge-2')).toBe(1)
    })

    it('group commit: of one seq twice in a batch the first is stored, then a duplicate or a conflict', async () => {
      const first = status('edge-1', 5)
      const other = status('edge-1', 5, { manifestId: hex(16) })
      const outcomes = await store.recordStatuses([
        status('edge-2', 3),
        first,
        first,
        other,
        status('edge-1', 4),
      ])
      expect(outcomes.slice(0, 3)).toEqual(['stored', 'stored', 'duplicate'])
      expect((outcomes[3] as StoreConflictError).code).toBe('seq-reused')
      expect(outcomes[4]).toBe('stored')
      expect((await store.statusHistory('edge-1', 5)).map((r) => [r.seq, r.report.manifestId])).toEqual([
        [5, first.report.manifestId],
        [4, expect.anything()],
      ])
      expect(await store.lastStatusSeq('edge-1')).toBe(5)
      expect(await store.lastStatusSeq('edge-2')).toBe(3)
    })
  })

  describe("an update's log and a rollout's report", () => {
    beforeEach(async () => {
      await store.enrollMachine(enrollInput('edge-1'))
    })

    it('are found among later reports, whatever characters the log holds', async () => {
      const older = hex(16)
      const update = hex(16)
      const rollout = hex(16)
      const at = (seq: number, overrides: Partial<StatusReport>) => status('edge-1', seq, overrides)
      const reports = [
        at(1, { manifestId: older, log: 'older update', rolloutId: null }),
        // a NUL in a log must not hide the report (PostgreSQL's json refuses \u0000)
        at(2, { manifestId: update, log: 'step 1\u0000step 2', rolloutId: rollout }),
        at(3, { manifestId: update, rolloutId: null }),
      ]
      for (const r of reports) await store.recordStatus(r)
      expect(await store.latestLogReport('edge-1')).toEqual(reports[1])
      expect(await store.latestRolloutReport('edge-1', rollout)).toEqual(reports[1])
      expect(await store.latestRolloutReport('edge-1', hex(16))).toBeUndefined()
      await store.recordStatus(at(4, { manifestId: hex(16), rolloutId: null }))
      // a newer update without a log: its latest report, never the older update's log
      expect((await store.latestLogReport('edge-1'))?.seq).toBe(4)
    })
  })

  describe('status ingest (group commit)', () => {
    it('resolves every report once durable, sharing commits between reports that arrive together', async () => {
      const { StatusIngest } = await import('../../coordinator/ingest.ts')
      for (const name of ['edge-1', 'edge-2']) await store.enrollMachine(enrollInput(name))
      const ingest = new StatusIngest(store)
      const records = Array.from({ length: 200 }, (_, i) =>
        status(i % 2 === 0 ? 'edge-1' : 'edge-2', Math.floor(i / 2) + 1),
      )
      const outcomes = await Promise.all(records.map((r) => ingest.record(r)))
      expect(outcomes.every((o) => o === 'stored')).toBe(true)
      expect(ingest.reports).toBe(200)
      expect(ingest.commits).toBeLessThan(200)
      expect(await store.lastStatusSeq('edge-1')).toBe(100)
      await expect(ingest.record(status('ghost', 1))).rejects.toBeInstanceOf(StoreConflictError)
    })
  })

  describe('nonces and revocations', () => {
    it('remembers a nonce until it expires and is pruned', async () => {
      expect(await store.rememberNonce('a', 100)).toBe(true)
      expect(await store.rememberNonce('a', 100)).toBe(false)
      expect(await store.rememberNonce('b', 200)).toBe(true)
      await store.pruneNonces(100)
      expect(await store.rememberNonce('b', 200)).toBe(false)
      expect(await store.rememberNonce('a', 300)).toBe(true)
    })

    it('keeps revoked serials, idempotently', async () => {
      expect(await store.revokedSerials()).toEqual(new Set())
      const serial = hex(16)
      await store.revoke(serial, 'laptop stolen', 10)
      await store.revoke(serial, 'again', 20)
      await store.revoke(hex(16), 'left the team', 30)
      const revoked = await store.revokedSerials()
      expect(revoked.size).toBe(2)
      expect(revoked.has(serial)).toBe(true)
    })
  })

  describe('restarts', () => {
    it('keeps everything across close and reopen', async () => {
      await store.initFleet('acme', 'root')
      const e = enrollInput('edge-1')
      await store.enrollMachine(e)
      await store.touchMachine('edge-1', { lastSeen: 77, path: 'direct' })
      const m = newManifest(4)
      await store.addManifest(m, ['edge-1'])
      const s = status('edge-1', 9)
      await store.recordStatus(s)
      await store.revoke('ab'.repeat(16), 'gone', 1)
      await store.rememberNonce('n1', 99)
      const machine = await store.getMachine('edge-1')
      await store.close()
      await store.close()

      store = await kind.reopen()
      expect(await store.getFleet()).toEqual({ fleetId: 'acme', fleetRoot: 'root' })
      expect(await store.getMachine('edge-1')).toEqual(machine)
      expect(await store.getDesired('edge-1')).toEqual({ ...m, machines: ['edge-1'] })
      expect(await store.maxSequence()).toBe(4)
      expect(await store.latestStatus('edge-1')).toEqual(s)
      expect(await store.revokedSerials()).toEqual(new Set(['ab'.repeat(16)]))
      expect(await store.rememberNonce('n1', 99)).toBe(false)
      expect((await conflict(store.enrollMachine({ ...e, name: 'edge-9' }))).code).toBe('token-used')
    })
  })
})

// SQLite only: the file itself, and a kill -9 of the process writing it.
describe('sqlite', () => {
  let dir: string
  let dbPath: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-store-'))
    dbPath = join(dir, 'state', 'coordinator.db')
    store = await openSqliteStore(dbPath)
  })
  afterEach(async () => {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  })

  describe('the database file', () => {
    it('is created with its directory, mode 0600, WAL journal and the current schema version', async () => {
      await store.enrollMachine(enrollInput('edge-1'))
      expect((await stat(dbPath)).mode & 0o777).toBe(0o600)
      expect((await stat(`${dbPath}-wal`)).mode & 0o777).toBe(0o600)
      const raw = new DatabaseSync(dbPath, { readOnly: true })
      try {
        expect(raw.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' })
        expect(raw.prepare('PRAGMA user_version').get()).toEqual({ user_version: SCHEMA_VERSION })
      } finally {
        raw.close()
      }
    })

    it('refuses a database written by a newer schema', async () => {
      await store.close()
      const raw = new DatabaseSync(dbPath)
      raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`)
      raw.close()
      const err = await openSqliteStore(dbPath).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StoreSchemaError)
      expect((err as Error).message).toContain('newer fleetmesh')
      store = await openSqliteStore(':memory:')
    })

    it('adds the transport column to a database of the schema before it, keeping its rows', async () => {
      await store.enrollMachine(enrollInput('edge-1'))
      await store.touchMachine('edge-1', { lastSeen: 77, path: 'relayed' })
      await store.close()
      // the file as the previous version left it: no transport column, one schema version less
      const raw = new DatabaseSync(dbPath)
      raw.exec('ALTER TABLE machines DROP COLUMN transport')
      raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION - 1}`)
      raw.close()

      store = await openSqliteStore(dbPath)
      expect(await store.getMachine('edge-1')).toMatchObject({
        lastSeen: 77,
        path: 'relayed',
        transport: null,
      })
      await store.touchMachine('edge-1', { lastSeen: 88, path: 'direct', transport: 'quic' })
      await store.close()
      store = await openSqliteStore(dbPath) // opening again migrates nothing and keeps it
      expect(await store.getMachine('edge-1')).toMatchObject({ path: 'direct', transport: 'quic' })
      const check = new DatabaseSync(dbPath)
      try {
        expect(check.prepare('PRAGMA user_version').get()).toEqual({ user_version: SCHEMA_VERSION })
        expect(() => check.exec("UPDATE machines SET transport = 'udp'")).toThrow(/CHECK constraint/)
      } finally {
        check.close()
      }
    })

    it('works in memory for unit tests', async () => {
      const mem = await openSqliteStore(':memory:')
      await mem.enrollMachine(enrollInput('edge-1'))
      expect((await mem.listMachines()).length).toBe(1)
      await mem.close()
    })
  })

  describe('crash durability', () => {
    it('keeps every status acknowledged before the process was killed', async () => {
      await store.enrollMachine(enrollInput('edge-1'))
      await store.close()

      const child = spawn(
        process.execPath,
        [fileURLToPath(new URL('./store-crash-child.ts', import.meta.url)), dbPath, 'edge-1'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      )
      const acknowledged: number[] = []
      let stderr = ''
      let pending = ''
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk
      })
      const exited = new Promise<NodeJS.Signals | null>((resolve) => {
        child.on('close', (_code, signal) => resolve(signal))
      })
      // Only whole lines count: a partial line was not fully written when the process died.
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        pending += chunk
        const lines = pending.split('\n')
        pending = lines.pop() ?? ''
        for (const line of lines) acknowledged.push(Number(line))
        if (acknowledged.length >= 200 && child.exitCode === null && !child.killed) child.kill('SIGKILL')
      })
      const signal = await exited
      expect(signal, `child exited on its own; stderr:\n${stderr}`).toBe('SIGKILL')
      expect(acknowledged.length).toBeGreaterThanOrEqual(200)
      expect(acknowledged).toEqual(acknowledged.map((_, i) => i + 1))

      const raw = new DatabaseSync(dbPath)
      expect(raw.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' })
      raw.close()
      store = await openSqliteStore(dbPath)
      const stored = new Set((await store.statusHistory('edge-1', 1_000_000)).map((s) => s.seq))
      const missing = acknowledged.filter((seq) => !stored.has(seq))
      expect(missing).toEqual([])
      expect(await store.lastStatusSeq('edge-1')).toBeGreaterThanOrEqual(acknowledged.length)
    })
  })
})
