/**
 * Status report numbering across a lost `outbox/next-seq.json`: on connect the
 * coordinator says the highest report seq it stored for the machine, and the
 * agent's reports continue above it, so none is mistaken for one already
 * stored (and dropped) and the coordinator shows what the device runs. A report
 * that reuses a stored seq with other content is counted, never taken for a
 * duplicate.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, describe, expect, it } from 'vitest'
import { Outbox, reportKind } from '../../agent/outbox.ts'
import { StatusIngest } from '../../coordinator/ingest.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { FleetStore, StatusRecord } from '../../coordinator/store.ts'
import { DOMAINS, PrivateKey } from '../../keys/index.ts'
import { openEnvelope, type StatusReport, sealEnvelope, statusReportSchema } from '../../protocol/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, TestFleet } from '../../testkit/harness.ts'

describe('report numbering after the agent lost its counter', () => {
  let fleet: TestFleet | undefined
  afterEach(async () => {
    await fleet?.stop()
  })

  it('continues above what the coordinator stored, so no report is dropped as a duplicate', async () => {
    const f = await TestFleet.create()
    fleet = f
    await f.startCoordinator()
    const agent = await f.enrollAgent('edge-1')
    for (const version of ['v1', 'v1b']) {
      const archive = await makeArchive(f.dir, { version })
      const r = await f.deploy(archive, 'edge-1', version)
      expect(r.code, r.stdout + r.stderr).toBe(0)
    }
    await agent.kill('SIGTERM')
    const stored = () => {
      const db = new DatabaseSync(f.storePath, { readOnly: true })
      try {
        return db.prepare('SELECT seq FROM statuses WHERE machine = ? ORDER BY seq').all('edge-1') as {
          seq: number
        }[]
      } finally {
        db.close()
      }
    }
    const mark = stored().at(-1)?.seq ?? 0
    expect(mark).toBeGreaterThan(8)

    await rm(join(f.agentState('edge-1'), 'outbox', 'next-seq.json'))
    const again = f.startAgent('edge-1')
    await again.waitFor((e) => e.event === 'connected', 30_000, 'edge-1 reconnected')
    const v2 = await makeArchive(f.dir, { version: 'v2' })
    expect((await f.deploy(v2, 'edge-1', 'v2', ['--no-watch'])).code).toBe(0)
    const committed = await again.waitFor(
      (e) => e.event === 'status' && e.state === 'committed' && e.desiredGeneration === 'v2',
      60_000,
      'edge-1 committed v2',
    )
    expect(committed.seq as number).toBeGreaterThan(mark)
    await again.waitFor(
      (e: Event) => e.event === 'acked' && (e.seq as number) >= (committed.seq as number),
      30_000,
      'the committed report acknowledged',
    )

    const rows = await f.machines()
    expect(rows.map((m) => [m.name, m.state, m.currentGeneration])).toEqual([['edge-1', 'committed', 'v2']])
    // every report the restarted agent made was stored, the one it queued before connecting too
    const reports = again.events.filter((e) => e.event === 'status').length
    expect(stored().filter((r) => r.seq > mark)).toHaveLength(reports)
  }, 180_000)
})

describe('a report that reuses a stored seq', () => {
  let store: FleetStore
  afterEach(async () => {
    await store.close()
  })

  it('is counted as reused when its content differs, and only a byte-identical one is a duplicate', async () => {
    store = await openSqliteStore(':memory:')
    const key = PrivateKey.generate()
    await store.enrollMachine({
      name: 'edge-1',
      peerId: key.toPeerId().toString(),
      publicKey: key.publicKey.toString(),
      tags: [],
      facts: {},
      nonce: randomBytes(16).toString('hex'),
      at: 1,
    })
    const record = (state: StatusReport['state'], envelope: number[]): StatusRecord => ({
      machine: 'edge-1',
      seq: 3,
      report: {
        v: 1,
        machine: 'edge-1',
        seq: 3,
        timestamp: 1,
        state,
        manifestId: null,
        manifestSequence: null,
        rolloutId: null,
        currentGeneration: state === 'committed' ? 'v2' : 'v1',
        desiredGeneration: null,
        progress: null,
        error: null,
        facts: {},
      },
      envelope: Uint8Array.from(envelope),
      receivedAt: 1,
    })
    const ingest = new StatusIngest(store)
    expect(await ingest.record(record('idle', [1, 2, 3]))).toBe('stored')
    expect(await ingest.record(record('idle', [1, 2, 3]))).toBe('duplicate')
    expect(ingest.reused).toBe(0)
    expect(await ingest.record(record('committed', [4, 5, 6]))).toBe('reused')
    expect(ingest.reused).toBe(1)
    // the stored report stays what it was
    expect((await store.latestStatus('edge-1'))?.report.state).toBe('idle')
  })
})

describe('the outbox agreeing with the coordinator', () => {
  const key = PrivateKey.generate()
  let dir: string
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const report = (seq: number, state: StatusReport['state']): StatusReport => ({
    v: 1,
    machine: 'edge-1',
    seq,
    timestamp: seq,
    state,
    manifestId: null,
    manifestSequence: null,
    rolloutId: null,
    currentGeneration: null,
    desiredGeneration: null,
    progress: null,
    error: null,
    facts: {},
  })
  async function queue(outbox: Outbox, state: StatusReport['state']): Promise<void> {
    const seq = await outbox.nextSeq()
    const r = report(seq, state)
    await outbox.enqueue(seq, sealEnvelope(statusReportSchema, DOMAINS.status, r, key), reportKind(r))
  }
  const queued = async (outbox: Outbox) =>
    (await outbox.pending()).map(({ seq, envelope }) => {
      const opened = openEnvelope(statusReportSchema, DOMAINS.status, envelope)
      expect(opened.signer.equals(key.publicKey)).toBe(true)
      return [seq, opened.value.seq, opened.value.state]
    })

  it('renumbers queued reports above the mark, in order, once the counter is lost', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-outbox-'))
    const first = await Outbox.open(dir, { signer: key })
    expect(await first.reconcile(0)).toEqual({ acked: 0, renumbered: 0 })
    await queue(first, 'downloading')
    await queue(first, 'verified')
    await rm(join(dir, 'outbox', 'next-seq.json'))

    const outbox = await Outbox.open(dir, { signer: key })
    await queue(outbox, 'committed')
    // handed out before the coordinator's mark was known, queued after
    const early = await outbox.nextSeq()
    expect(await outbox.reconcile(20)).toEqual({ acked: 0, renumbered: 3 })
    const late = report(early, 'idle')
    await outbox.enqueue(early, sealEnvelope(statusReportSchema, DOMAINS.status, late, key))
    await queue(outbox, 'idle')
    expect(await queued(outbox)).toEqual([
      [21, 21, 'downloading'],
      [22, 22, 'verified'],
      [23, 23, 'committed'],
      [24, 24, 'idle'],
      [25, 25, 'idle'],
    ])
    // agreed: the next connect drops only what the coordinator stored
    const reopened = await Outbox.open(dir, { signer: key })
    expect(await reopened.reconcile(22)).toEqual({ acked: 2, renumbered: 0 })
    expect((await queued(reopened)).map(([seq]) => seq)).toEqual([23, 24, 25])
  })
})
