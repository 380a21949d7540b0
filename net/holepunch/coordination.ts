/**
 * The two ends of the `/fleetmesh/holepunch/1` exchange (see messages.ts),
 * over a FramedStream on the relayed connection. They only agree on where and
 * when to punch; punching and upgrading are the caller's.
 */

import type { Multiaddr } from '@multiformats/multiaddr'
import type { FramedStream } from '../../protocol/index.ts'
import { encodeMessage } from '../../protocol/index.ts'
import { lanCandidates } from './candidates.ts'
import { HolePunchRefusedError, HolePunchSkippedError, type RefuseReason, type SkipReason } from './errors.ts'
import { connectSchema, decisionSchema, decodeHolePunch, replySchema } from './messages.ts'
import type { Endpoint, NatKind } from './nat.ts'
import type { NatObserver } from './observer-client.ts'
import type { HolePunchSettings } from './settings.ts'

/**
 * What one side tells the other: its NAT kind and where to reach it, best
 * first: the observed external endpoint (the punch target), then its LAN
 * candidates (candidates.ts), which only a peer behind the same public address uses.
 */
export interface PunchOffer {
  nat: NatKind
  observed: Endpoint[]
}

/**
 * Which side's symmetric NAT rules a punch out, worded from this host's side
 * (each end builds its own: a text passed across would name the wrong one).
 */
export function symmetricDetail(local: NatKind, remote: NatKind): string | undefined {
  const side =
    local === 'symmetric'
      ? remote === 'symmetric'
        ? 'both this host and the peer are'
        : 'this host is'
      : remote === 'symmetric'
        ? 'the peer is'
        : undefined
  return side === undefined
    ? undefined
    : `${side} behind a symmetric NAT, so the punch mapping cannot be predicted; keeping the relay`
}

export interface ExchangeOptions {
  /** For each message awaited from the peer */
  timeoutMs: number
  signal: AbortSignal
}

export interface ProposeOptions extends ExchangeOptions {
  /** Punch even if a NAT is symmetric (benchmarks, diagnosis) */
  force: boolean
}

/**
 * Initiator: offer, read the peer's offer, decide, send SYNC.
 *
 * @returns the peer's offer and the round trip of the exchange; punch after `rttMs / 2`
 * @throws {HolePunchRefusedError} the peer declined
 * @throws {HolePunchSkippedError} a NAT is symmetric (ABORT was sent)
 */
export async function proposePunch(
  fs: FramedStream,
  local: PunchOffer,
  options: ProposeOptions,
): Promise<{ remote: PunchOffer; rttMs: number }> {
  const { signal, timeoutMs } = options
  const started = performance.now()
  await fs.send(encodeMessage(connectSchema, { type: 'connect', nat: local.nat, observed: local.observed }), {
    signal,
  })
  const reply = decodeHolePunch(replySchema, await fs.readOne({ timeoutMs, signal }), 'reply')
  const rttMs = performance.now() - started
  if (reply.type === 'refuse') throw new HolePunchRefusedError(reply.reason, reply.detail)

  const symmetric = symmetricDetail(local.nat, reply.nat)
  if (symmetric !== undefined && !options.force) {
    const detail = symmetric
    await fs.send(encodeMessage(decisionSchema, { type: 'abort', reason: 'symmetric-nat', detail }), {
      signal,
    })
    await fs.close({ signal })
    throw new HolePunchSkippedError('symmetric-nat', detail)
  }
  await fs.send(encodeMessage(decisionSchema, { type: 'sync' }), { signal })
  // not awaited: the SYNC is queued, and waiting for the flush would only skew the start
  fs.close({ signal }).catch(() => {})
  return { remote: { nat: reply.nat, observed: reply.observed }, rttMs }
}

/** Why this host cannot offer a punch; both a skip (as initiator) and a refusal (as responder) */
export interface LocalRefusal {
  refuse: SkipReason & RefuseReason
  detail: string
}

/** Our offer (our LAN candidates from `listening` after the observed endpoint), or why we cannot make one */
export async function localOffer(
  observer: NatObserver | undefined,
  settings: Pick<HolePunchSettings, 'enabled' | 'observeTimeoutMs' | 'observers'>,
  force: boolean,
  listening: readonly Multiaddr[] = [],
): Promise<PunchOffer | LocalRefusal> {
  if (!settings.enabled || observer === undefined) {
    return { refuse: 'disabled', detail: 'hole punching is disabled on this host' }
  }
  const observation = await observer.ready(settings.observeTimeoutMs * 2)
  if (observation.observed === undefined) {
    return {
      refuse: 'no-observation',
      detail:
        settings.observers.length === 0
          ? 'no observers are configured, so this host does not know its external endpoint'
          : `no observer answered (${observation.observers.map((o) => `${o.observer}: ${o.error}`).join('; ')})`,
    }
  }
  if (observation.natKind === 'symmetric' && !force) {
    return { refuse: 'symmetric-nat', detail: 'this host is behind a symmetric NAT' }
  }
  return { nat: observation.natKind, observed: [observation.observed, ...lanCandidates(listening)] }
}

export type Answer = PunchOffer | { refuse: RefuseReason; detail: string }

export type AnswerOutcome =
  /** `local`: the offer we answered with; `rttMs`: from our reply to the SYNC, one round trip over the relay */
  | { kind: 'punch'; remote: PunchOffer; local: PunchOffer; rttMs: number }
  | { kind: 'refused'; reason: RefuseReason; remote: PunchOffer | undefined }
  | { kind: 'aborted'; error: HolePunchSkippedError; remote: PunchOffer }

/**
 * Responder: read the offer, answer with ours (from `decide`) or a refusal,
 * then wait for SYNC. Punch as soon as this returns `punch`.
 */
export async function answerPunch(
  fs: FramedStream,
  decide: (remote: PunchOffer) => Promise<Answer>,
  options: ExchangeOptions,
): Promise<AnswerOutcome> {
  const { signal, timeoutMs } = options
  const offer = decodeHolePunch(connectSchema, await fs.readOne({ timeoutMs, signal }), 'connect')
  const remote: PunchOffer = { nat: offer.nat, observed: offer.observed }
  const answer = await decide(remote)
  if ('refuse' in answer) {
    await fs.send(
      encodeMessage(replySchema, {
        type: 'refuse',
        reason: answer.refuse,
        detail: answer.detail.slice(0, 256),
      }),
      { signal },
    )
    await fs.close({ signal })
    return { kind: 'refused', reason: answer.refuse, remote }
  }
  const replied = performance.now()
  await fs.send(encodeMessage(replySchema, { type: 'connect', nat: answer.nat, observed: answer.observed }), {
    signal,
  })
  const decision = decodeHolePunch(decisionSchema, await fs.readOne({ timeoutMs, signal }), 'decision')
  // not awaited: the peer starts its punch RTT/2 after sending SYNC, so must we now
  fs.close({ signal }).catch(() => {})
  if (decision.type === 'abort') {
    // The initiator's detail speaks from its side ("this host is"); say it from ours.
    const detail = symmetricDetail(answer.nat, remote.nat) ?? decision.detail
    return { kind: 'aborted', error: new HolePunchSkippedError(decision.reason, detail), remote }
  }
  return { kind: 'punch', remote, local: answer, rttMs: performance.now() - replied }
}
