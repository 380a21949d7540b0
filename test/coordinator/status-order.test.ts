/**
 * The states of an update reach the operator in the order the agent reported
 * them, each one: `logs --follow` under load missed "downloading" and
 * "confirming". Two causes, each tested here without libp2p (an in-memory SQLite
 * store, the agent's side scripted):
 * - the report verifiers answer out of order (a batch to each worker), and the
 *   reports were stored, and their events sent, in the order verified;
 * - a watch showed each status event with the machine's latest report in the
 *   store, which two reports in one group commit had already moved past.
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
  decodeMessage,
  type FramedStream,
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
