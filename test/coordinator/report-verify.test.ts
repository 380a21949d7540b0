/**
 * Status reports verified on worker threads (verify-pool.ts) are accepted and
 * refused exactly as the inline check (`openEnvelope`) accepts and refuses them:
 * the same report and signer, the same EnvelopeError code and message. Through
 * the coordinator's control service, a forged report ends the stream with that
 * error and is neither stored nor acknowledged.
 */
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ControlService } from '../../coordinator/control.ts'
import { FleetEvents } from '../../coordinator/events.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { FleetStore } from '../../coordinator/store.ts'
import { VerifyPool } from '../../coordinator/verify-pool.ts'
import { DOMAINS, PrivateKey } from '../../keys/index.ts'
import {
  controlFrameSchema,
  EnvelopeError,
  encodeMessage,
  manifestSchema,
  openEnvelope,
  sealEnvelope,
  statusReportSchema,
} from '../../protocol/index.ts'
import { sampleManifest, sampleStatus } from '../../testkit/fixtures.ts'
import { enroll, reportEnvelope, ScriptedStream, serve, statusFrame } from './ingest-stream.ts'

const key = PrivateKey.generate()
const pool = new VerifyPool(2)
afterAll(() => pool.close())

/** The envelope with one byte of its signature flipped. */
function forged(envelope: Uint8Array, machine: string, seq: number): Uint8Array {
  const payload = openEnvelope(statusReportSchema, DOMAINS.status, envelope).payload
  const sig = key.sign(DOMAINS.status, payload) // Ed25519 is deterministic: the bytes in the envelope
  const at = Buffer.from(envelope).indexOf(Buffer.from(sig))
  expect(at, `signature of ${machine} #${seq} found`).toBeGreaterThan(0)
  const copy = envelope.slice()
  copy[at + 5] = (copy[at + 5] as number) ^ 1
  return copy
}

/** What the inline check throws for `envelope`, as code and message. */
function inlineRefusal(envelope: Uint8Array): { code: string; message: string } {
  try {
    openEnvelope(statusReportSchema, DOMAINS.status, envelope)
  } catch (err) {
    expect(err).toBeInstanceOf(EnvelopeError)
    return { code: (err as EnvelopeError).code, message: (err as Error).message }
  }
  throw new Error('the inline check accepted it')
}

describe('the verify pool', () => {
  it('opens a report as the inline check does: the same report and signer', async () => {
    const envelopes = Array.from({ length: 50 }, (_, i) => reportEnvelope('edge-1', i + 1, key))
    const opened = await Promise.all(envelopes.map((e) => pool.open(e)))
    opened.forEach((o, i) => {
      const inline = openEnvelope(statusReportSchema, DOMAINS.status, envelopes[i] as Uint8Array)
      expect(o.value).toEqual(inline.value)
      expect(o.signer.equals(inline.signer)).toBe(true)
    })
  })

  it('refuses with the same code and message: forged, wrong domain, malformed, bad payload', async () => {
    const good = reportEnvelope('edge-1', 1, key)
    const cases = [
      forged(good, 'edge-1', 1),
      sealEnvelope(statusReportSchema, DOMAINS.manifest, sampleStatus({ machine: 'edge-1' }), key),
      new Uint8Array([0xa1, 0x61, 0x76, 0x02]),
      // a manifest payload under the status domain: signed, but not a status report
      sealEnvelope(manifestSchema, DOMAINS.status, sampleManifest(), key),
    ]
    const codes: string[] = []
    for (const envelope of cases) {
      const expected = inlineRefusal(envelope)
      codes.push(expected.code)
      const got = await pool.open(envelope).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(got).toBeInstanceOf(EnvelopeError)
      expect({ code: (got as EnvelopeError).code, message: (got as Error).message }).toEqual(expected)
    }
    expect(codes).toEqual(['bad-signature', 'wrong-domain', 'malformed', 'bad-payload'])
  })

  it('opens reports handed in together, each with its own verdict', async () => {
    const envelopes = Array.from({ length: 300 }, (_, i) => reportEnvelope('edge-1', i + 1, key))
    envelopes[150] = forged(envelopes[150] as Uint8Array, 'edge-1', 151)
    const outcomes = await Promise.allSettled(envelopes.map((e) => pool.open(e)))
    expect(outcomes.map((o) => o.status === 'fulfilled' && o.value.value.seq)).toEqual(
      envelopes.map((_, i) => (i === 150 ? false : i + 1)),
    )
  })
})

describe('a forged report through the control service', () => {
  let store: FleetStore
  let control: ControlService
  beforeEach(async () => {
    store = await openSqliteStore(':memory:')
    control = new ControlService({ store, events: new FleetEvents(), idleTimeoutMs: 600_000, log: () => {} })
  })
  afterEach(() => store.close())

  it('ends the stream with the bad-signature error; it is neither stored nor acknowledged', async () => {
    await enroll(store, 'edge-1', key)
    const bad = forged(reportEnvelope('edge-1', 2, key), 'edge-1', 2)
    const fs = new ScriptedStream('edge-1', [
      statusFrame('edge-1', 1, key),
      encodeMessage(controlFrameSchema, { t: 'status', envelope: bad }),
    ])
    const outcome = await serve(control, fs, key).then(
      () => undefined,
      (err: unknown) => err,
    )
    const expected = inlineRefusal(bad)
    for (const err of [outcome, fs.aborted]) {
      expect(err).toBeInstanceOf(EnvelopeError)
      expect({ code: (err as EnvelopeError).code, message: (err as Error).message }).toEqual(expected)
    }
    expect(fs.acks().every((seq) => seq < 2)).toBe(true)
    expect(await store.lastStatusSeq('edge-1')).toBeLessThan(2)
  })

  it('refuses a report signed by another key than the machine enrolled with', async () => {
    await enroll(store, 'edge-1', key)
    const fs = new ScriptedStream('edge-1', [statusFrame('edge-1', 1, PrivateKey.generate())])
    await expect(serve(control, fs, key)).rejects.toThrow('status report for edge-1 signed by another key')
    expect(fs.acks()).toEqual([])
  })
})
