/**
 * The states of an update reach the operator in the order the agent reported
 * them, each one, and its output before the outcome: `logs --follow` under load
 * missed "downloading" and "confirming", and later a health check's output.
 * Three causes, each tested here without libp2p (an in-memory SQLite store, the
 * agent's side scripted):
 * - the report verifiers answer out of order (a batch to each worker), and the
 *   reports were stored, and their events sent, in the order verified;
 * - a watch showed each status event with the machine's latest report in the
 *   store, which two reports in one group commit had already moved past;
 * - a report's event did not wait for the update output sent before it, which
 *   is passed on only once the store has named the machine's current update.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { streamWatch } from '../../coordinator/admin-watch.ts'
import { ControlService } from '../../coordinator/control.ts'
import { FleetEvents } from '../../coordinator/events.ts'
import type { RolloutEngine } from '../../coordinator/rollout-engine.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { FleetStore, StatusRecord } from '../../coordinator/store.ts'
import { DOMAINS, PrivateKey, verifyChain } from '../../keys/index.ts'
import {
  adminResponseSchema,
  controlFrameSchema,
  decodeMessage,
  encodeMessage,
  type FramedStream,
  type StatusReport,
  sealEnvelope,
  statusReportSchema,
  type UpdateState,
} from '../../protocol/index.ts'
import { certifiedAdmin, sampleStatus } from '../../testkit/fixtures.ts'
import { enroll, ScriptedStream, serve, statusFrame } from './ingest-stream.ts'

let store: FleetStore
let events: FleetEvents
beforeEach(async () => {
  store = await openSqliteStore(':memory:')
  events = new FleetEvents()
})
afterEach(async () => {
  await store.close()
})

describe('the states of an update, as the operator sees them', () => {
  it('are passed on in the order the agent sent its reports, whichever verifier answers first', async () => {
    const control = new ControlService({ store, events, idleTimeoutMs: 600_000, log: () => {} })
    const key = PrivateKey.generate()
    await enroll(store, 'edge-1', key)
    const seen: number[] = []
    events.on((e) => {
      if (e.type === 'status') seen.push(e.status.seq)
    })
    const count = 60
    const fs = new ScriptedStream(
      'edge-1',
      Array.from({ length: count }, (_, i) => statusFrame('edge-1', i + 1, key)),
    )
    fs.onSend = (frame) => frame.t === 'ack' && frame.seq === count && fs.end()
    await serve(control, fs, key)
    expect(seen).toEqual(Array.from({ length: count }, (_, i) => i + 1))
  })

  it("pass on an update's output before the outcome the agent reported after it", async () => {
    const key = PrivateKey.generate()
    await enroll(store, 'edge-1', key)
    const manifestId = 'ab'.repeat(16)
    const report = (seq: number, state: UpdateState, error: StatusReport['error'] = null) =>
      encodeMessage(controlFrameSchema, {
        t: 'status',
        envelope: sealEnvelope(
          statusReportSchema,
          DOMAINS.status,
          sampleStatus({ machine: 'edge-1', seq, state, manifestId, error }),
          key,
        ),
      })
    const output = encodeMessage(controlFrameSchema, {
      t: 'update-log',
      manifestId,
      offset: 0,
      text: '$ ./health\nhealth: connection refused\n',
    })
    // The output is passed on once the store says which update is the machine's
    // current one. Here that answer comes only once the outcome is stored, as it can
    // when both reports go in one group commit, or the store is a database away.
    const outcomeStored = Promise.withResolvers<void>()
    const slow = new Proxy(store, {
      get(target, prop) {
        if (prop === 'recordStatuses')
          return async (records: readonly StatusRecord[]) => {
            const outcomes = await target.recordStatuses(records)
            if (records.some((r) => r.seq === 2)) outcomeStored.resolve()
            return outcomes
          }
        if (prop === 'latestStatus')
          return async (machine: string) => {
            await outcomeStored.promise
            return target.latestStatus(machine)
          }
        const value: unknown = Reflect.get(target, prop)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    const control = new ControlService({ store: slow, events, idleTimeoutMs: 600_000, log: () => {} })
    const seen: string[] = []
    events.on((e) => {
      if (e.type === 'status') seen.push(e.status.report.state)
      if (e.type === 'update-log') seen.push('output')
    })
    // As an agent sends a failing health check: the state, its output, the outcome.
    const failed = { code: 'health-check-failed', message: './health exited with 1' }
    const fs = new ScriptedStream('edge-1', [
      report(1, 'confirming'),
      output,
      report(2, 'rolled-back', failed),
    ])
    fs.onSend = (frame) => frame.t === 'ack' && frame.seq === 2 && fs.end()
    await serve(control, fs, key)
    // A follower ends at the outcome: output after it is never shown.
    expect(seen).toEqual(['confirming', 'output', 'rolled-back'])
  })

  it("are each shown by a watch with the report of its event, not the store's latest", async () => {
    const key = PrivateKey.generate()
    await enroll(store, 'edge-1', key)
    const report = (seq: number, state: UpdateState): StatusRecord => {
      const value = sampleStatus({ machine: 'edge-1', seq, state })
      const envelope = sealEnvelope(statusReportSchema, DOMAINS.status, value, key)
      return { machine: 'edge-1', seq, report: value, envelope, receivedAt: Date.now() }
    }
    const downloading = report(1, 'downloading')
    const verified = report(2, 'verified')
    // both stored in one group commit before the watch sends either event
    expect(await store.recordStatuses([downloading, verified])).toEqual(['stored', 'stored'])

    const { root, admin, chain } = certifiedAdmin({
      capabilities: ['read'],
      scope: { machines: [], tags: ['lab'] },
    })
    const authority = verifyChain(chain, {
      root: root.publicKey,
      signer: admin.publicKey,
      capability: 'read',
    })
    const states: (string | null)[] = []
    let close: () => void = () => {}
    const stream = {
      status: 'open',
      addEventListener: (_: string, listener: () => void) => {
        close = listener
      },
    }
    const sent = Promise.withResolvers<void>()
    const fs = {
      stream,
      async send(bytes: Uint8Array) {
        const response = decodeMessage(adminResponseSchema, bytes, 'watch event', 1 << 20)
        const result = (response as { result?: { type: string; machine?: { state: string | null } } }).result
        if (result?.type === 'snapshot') {
          // live now: the two events of the one commit, in turn
          events.emit({ type: 'status', machine: 'edge-1', status: downloading })
          events.emit({ type: 'status', machine: 'edge-1', status: verified })
        }
        if (result?.type === 'status') states.push(result.machine?.state ?? null)
        if (states.length === 2) sent.resolve()
      },
    } as unknown as FramedStream
    const rollouts = { onChange: () => () => {}, view: async () => undefined } as unknown as RolloutEngine
    const watching = streamWatch(
      { store, events, control: { isOnline: () => true }, rollouts },
      fs,
      authority,
      null,
    )
    await sent.promise
    stream.status = 'closed'
    close()
    await watching
    expect(states).toEqual(['downloading', 'verified'])
  })
})
