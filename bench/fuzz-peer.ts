/**
 * One unauthenticated fuzzing peer of bench/fuzz.ts: a libp2p host with a
 * fresh Ed25519 key and no certificate dials the coordinator and runs a few
 * stream workers over that connection, each opening streams of a random
 * protocol and writing a planned set of frames (fuzz-frames.ts), then reading
 * whatever comes back (an answer, a reset, the end). After a few thousand
 * frames, or when the coordinator closes the connection, the peer takes a new
 * identity and dials again, so per-peer limits meet many peers.
 *
 * Resets, refused streams and lost connections are what a coordinator should
 * do to such a peer: they are counted, not failures.
 */
import { once } from 'node:events'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { decodeCanonical } from '../keys/index.ts'
import { backoffDelay, sleep } from '../lib/index.ts'
import { createHost } from '../net/index.ts'
import { FramedStream, PROTOCOLS } from '../protocol/index.ts'
import { FUZZ_KINDS, type FuzzKind, planStream, rand, type StreamPlan } from './fuzz-frames.ts'
import { FUZZ_PROTOCOLS, type FuzzProtocol, type SeedPool } from './fuzz-seeds.ts'

/**
 * How a stream ended, from the fuzzer's side: `answered` (a frame came back),
 * `reset` by the coordinator, `ended` (closed with no answer), `timeout`,
 * `aborted` (by us, on purpose), `open-failed` (refused or the connection
 * went), `write-failed` (reset while we were still writing).
 */
export const OUTCOMES = [
  'answered',
  'reset',
  'ended',
  'timeout',
  'aborted',
  'open-failed',
  'write-failed',
] as const
export type Outcome = (typeof OUTCOMES)[number]

const ANSWER_TIMEOUT_MS = 10_000
/** The coordinator waits 5 s for our side to close after its answer (framing.ts hangUp). */
const DRAIN_TIMEOUT_MS = 6_000
const RECENT_PLANS = 64
const FRAMES_PER_IDENTITY = { min: 1_000, spread: 3_000 }

const table = <K extends string>(keys: readonly K[]) =>
  Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>

/** Frames handed out to the peers: exactly `total`, frames a reset kept from going out are handed out again. */
export class FrameBudget {
  readonly total: number
  #claimed = 0
  sent = 0

  constructor(total: number) {
    this.total = total
  }

  claim(n: number): number {
    const granted = Math.min(n, this.total - this.#claimed)
    this.#claimed += granted
    return granted
  }

  /** `sent` of the `claimed` frames went out; the rest go back. */
  settle(claimed: number, sent: number): void {
    this.#claimed -= claimed - sent
    this.sent += sent
  }

  get exhausted(): boolean {
    return this.#claimed >= this.total
  }
}

/** A plan as written, for the crash report: protocol, kinds and the first bytes of each write. */
export interface PlanRecord {
  at: number
  protocol: FuzzProtocol
  kinds: FuzzKind[]
  writesHex: string[]
}

export class FuzzTally {
  readonly frames = Object.fromEntries(FUZZ_PROTOCOLS.map((p) => [p, table(FUZZ_KINDS)])) as Record<
    FuzzProtocol,
    Record<FuzzKind, number>
  >
  readonly streams = Object.fromEntries(FUZZ_PROTOCOLS.map((p) => [p, table(OUTCOMES)])) as Record<
    FuzzProtocol,
    Record<Outcome, number>
  >
  /** `<protocol> <code>` of every answer: the error code, or `ok` */
  readonly answers: Record<string, number> = {}
  /** Why streams could not be opened, by error name */
  readonly openErrors: Record<string, number> = {}
  identities = 0
  dialFailures = 0
  /** Streams opened (or tried) */
  streamCount = 0
  /** Connections the coordinator closed before the peer was done with them */
  connectionsLost = 0
  readonly recent: PlanRecord[] = []

  note(plan: StreamPlan): void {
    const writesHex = plan.writes
      .slice(0, 8)
      .map((w) => Buffer.from(w.bytes.subarray(0, 512)).toString('hex'))
    this.recent.push({ at: Date.now(), protocol: plan.protocol, kinds: plan.kinds, writesHex })
    if (this.recent.length > RECENT_PLANS) this.recent.shift()
  }

  count(key: string, into: Record<string, number>): void {
    into[key] = (into[key] ?? 0) + 1
  }
}

export interface PeerInit {
  /** The coordinator's address, ending in /p2p/<its peer id> */
  target: Multiaddr
  pool: SeedPool
  budget: FrameBudget
  tally: FuzzTally
  /** Concurrent streams per connection */
  streams: number
  signal: AbortSignal
}

/** Writes, waiting for the stream to drain when it asks to; rejects if the stream ends first. */
async function write(stream: Stream, bytes: Uint8Array): Promise<void> {
  if (stream.send(bytes)) return
  const stop = new AbortController()
  try {
    await Promise.race([
      once(stream, 'drain', { signal: stop.signal }),
      once(stream, 'close', { signal: stop.signal }).then(() => {
        throw new Error('stream closed while writing')
      }),
    ])
  } finally {
    stop.abort()
  }
}

const turn = (): Promise<void> =>
  new Promise((resolve) => (Math.random() < 0.1 ? setTimeout(resolve, 1) : setImmediate(resolve)))

/** What an answer says: its error code, `ok`, or `undecodable`. */
function answerCode(frame: Uint8Array): string {
  try {
    const v = decodeCanonical(frame, frame.byteLength) as {
      ok?: unknown
      error?: { code?: unknown }
      t?: unknown
    }
    if (v.ok === true) return 'ok'
    if (typeof v.error?.code === 'string') return v.error.code
    return typeof v.t === 'string' ? `frame ${v.t}` : 'other'
  } catch {
    return 'undecodable'
  }
}

async function runStream(conn: Connection, init: PeerInit, maxFrames: number): Promise<number> {
  const { tally } = init
  const plan = planStream(init.pool, FUZZ_PROTOCOLS[rand(FUZZ_PROTOCOLS.length)] as FuzzProtocol, maxFrames)
  const outcomes = tally.streams[plan.protocol]
  tally.streamCount++
  let stream: Stream
  try {
    stream = await conn.newStream(PROTOCOLS[plan.protocol], {
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
    })
  } catch (err) {
    outcomes['open-failed']++
    tally.count((err as Error).name, tally.openErrors)
    return 0
  }
  tally.note(plan)
  let sent = 0
  const fs = new FramedStream(stream)
  try {
    for (const w of plan.writes) {
      await write(stream, w.bytes)
      sent += w.ends
      if (w.pause) await turn()
    }
  } catch {
    outcomes['write-failed']++
    recordFrames(tally, plan, sent)
    return sent
  }
  recordFrames(tally, plan, sent)
  if (plan.end === 'abort') {
    fs.abort(new Error('fuzz: abandoned on purpose'))
    outcomes.aborted++
    return sent
  }
  let answered = false
  try {
    await fs.close()
    const answer = await fs.read({ timeoutMs: ANSWER_TIMEOUT_MS })
    if (answer === undefined) {
      outcomes.ended++
      return sent
    }
    answered = true
    outcomes.answered++
    tally.count(`${plan.protocol} ${answerCode(answer)}`, tally.answers)
    while ((await fs.read({ timeoutMs: DRAIN_TIMEOUT_MS })) !== undefined) {}
  } catch (err) {
    const timedOut = (err as Error).name === 'TimeoutError'
    if (timedOut) fs.abort(new Error('fuzz: no answer'))
    // after the answer, how the coordinator hangs up is its business
    if (!answered) outcomes[timedOut ? 'timeout' : 'reset']++
  }
  return sent
}

function recordFrames(tally: FuzzTally, plan: StreamPlan, sent: number): void {
  for (const kind of plan.kinds.slice(0, sent)) tally.frames[plan.protocol][kind]++
}

/** One identity after another until the budget is spent; see the file comment. */
export async function runPeer(init: PeerInit): Promise<void> {
  const { budget, tally, signal } = init
  let failures = 0
  while (!budget.exhausted && !signal.aborted) {
    const host = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519'), listen: [] })
    tally.identities++
    try {
      const conn = await host
        .dial(init.target, { signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS) })
        .catch(() => undefined)
      if (conn === undefined) {
        // the coordinator is restarting, or refusing us: try again later with a new identity
        tally.dialFailures++
        await sleep(backoffDelay(failures++, { initialMs: 100, maxMs: 2_000 }), signal).catch(() => {})
        continue
      }
      failures = 0
      let quota = FRAMES_PER_IDENTITY.min + rand(FRAMES_PER_IDENTITY.spread)
      const worker = async () => {
        while (quota > 0 && conn.status === 'open' && !signal.aborted) {
          const claimed = budget.claim(Math.min(8, quota))
          if (claimed === 0) return
          const sent = await runStream(conn, init, claimed)
          budget.settle(claimed, sent)
          quota -= Math.max(sent, 1)
        }
      }
      await Promise.all(Array.from({ length: init.streams }, worker))
      if (quota > 0 && !budget.exhausted && !signal.aborted) tally.connectionsLost++
    } finally {
      await host.stop()
    }
  }
}
