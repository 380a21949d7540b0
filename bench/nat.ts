/**
 * `npm run bench:nat`: NAT traversal figures from the NAT lab (network namespaces
 * with iptables NAT routers; needs root). For each NAT pair, peer B dials peer A
 * through a public relay at least 20 times and the hole-punching service tries to
 * upgrade the relayed connection to a direct one. Printed per pair: direct
 * connections out of the attempts, median time from the relayed dial to the direct
 * connection being open on both sides, and how many attempts still delivered an
 * application message (over the direct connection, else over the relay).
 *
 * References: go-libp2p's DCUtR ≈ 70 % direct in the wild (Trautwein et al.,
 * arXiv 2510.27500); js-libp2p in Node today: 0 % (it cannot punch TCP at all).
 * Lab target: 100 % direct on endpoint-independent NATs, 100 % delivery on symmetric.
 * Last, QUIC against TCP set-up times through a router with netem loss and delay (quic-lab.ts).
 */

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from '../lib/index.ts'
import { LabFleet, startLabRelay } from '../testkit/natlab/fleet-lab.ts'
import {
  canRunLab,
  createLab,
  type Lab,
  type LabHost,
  type NatBehaviour,
  type ProbeEvent,
} from '../testkit/natlab/lab.ts'
import {
  attemptWith,
  command,
  connEvent,
  startHolepunchPeer,
  startHolepunchRelay,
} from '../testkit/natlab/probe-commands.ts'
import { relayFailover, relayRestart } from '../testkit/natlab/relay-scenarios.ts'
import { fmt, line, percentile } from './measure.ts'
import { quicThroughLab } from './quic-lab.ts'

type Side = NatBehaviour | 'public'

interface PairResult {
  pair: string
  attempts: number
  direct: number
  delivered: number
  toDirectMs: number[]
}

/** `oneLan`: A and B on one eim router's LAN (no hairpin), reaching each other over it (issue 14) */
async function runPair(a: Side, b: Side, trials: number, oneLan = false): Promise<PairResult> {
  const lab = createLab()
  try {
    const relayHost = lab.addPublicHost('relay')
    const home = oneLan ? lab.addRouter('home', { behaviour: 'eim' }) : undefined
    const place = (name: string, side: Side): LabHost =>
      home !== undefined
        ? lab.addPrivateHost(name, home)
        : side === 'public'
          ? lab.addPublicHost(name)
          : lab.addHome(name, side)
    const hostA = place('a', a)
    const hostB = place('b', b)
    const relay = await startHolepunchRelay(lab, relayHost)
    // backoff 0: every trial is a fresh attempt, so one failure cannot hide the next
    const peerArgs = (role: string) => [
      '--role',
      role,
      '--reserve-on',
      relay.addr,
      '--observers',
      relay.observers,
      '--backoff-ms',
      '0',
      '--deadline-ms',
      '3000',
    ]
    // A plays the coordinator: it accepts 100 relayed connections per second, an agent 5.
    const [pa, pb] = await Promise.all([
      startHolepunchPeer(lab, hostA, peerArgs('coordinator')),
      startHolepunchPeer(lab, hostB, peerArgs('agent')),
    ])
    const result: PairResult = {
      pair: oneLan ? `${a} × ${b}, one LAN` : `${a} × ${b}`,
      attempts: trials,
      direct: 0,
      delivered: 0,
      toDirectMs: [],
    }
    for (let trial = 0; trial < trials; trial++) {
      const sent = performance.now()
      const seenA = pa.proc.events.length
      const seenB = pb.proc.events.length
      await command(pb, { cmd: 'dial', addr: pa.circuit }, 'dialed')
      // The side with the lower peer id starts the punch (or records why it skipped it).
      const [starter, other] = pa.id < pb.id ? [pa, pb] : [pb, pa]
      const seenStarter = starter === pa ? seenA : seenB
      const attempt = (await starter.proc.waitFor(
        (e) => attemptWith(other.id)(e) && starter.proc.events.indexOf(e) >= seenStarter,
        20_000,
      )) as ProbeEvent & { ok: boolean }
      if (attempt.ok) {
        await Promise.all([
          pa.proc.waitFor(connEvent('conn-open', pb.id, false), 10_000),
          pb.proc.waitFor(connEvent('conn-open', pa.id, false), 10_000),
        ])
        result.direct++
        result.toDirectMs.push(performance.now() - sent)
      }
      const echo = await command(pb, { cmd: 'echo', peer: pa.id, text: `trial ${trial}` }, 'echo').catch(
        () => undefined,
      )
      if (echo?.ok === true) result.delivered++
      await command(pb, { cmd: 'hangup', peer: pa.id }, 'hungup')
      await pa.proc.waitFor(
        (e) => e.event === 'conn-close' && e.peer === pb.id && pa.proc.events.indexOf(e) > seenA,
        10_000,
      )
    }
    return result
  } finally {
    lab.destroy()
  }
}

/**
 * A relay, a public coordinator and one behind an eim NAT reached through the relay
 * (reserved there, hole punching through the relay's observers): the two benchmarks
 * below measure agents against both. The fleets go into `fleets` for removal.
 */
async function twoCoordinators(lab: Lab, dir: string, fleets: LabFleet[]) {
  const admin = lab.addPublicHost('admin')
  const relayHost = lab.addPublicHost('relay')
  const relay = await startLabRelay(lab, relayHost, dir)
  const pub = await LabFleet.create(lab, { name: 'pub', admin, coordinator: lab.addPublicHost('coordpub') })
  const nat = await LabFleet.create(lab, {
    name: 'nat',
    admin,
    coordinator: lab.addPrivateHost('coordnat', lab.addRouter('cnat', { behaviour: 'eim' })),
    coordinatorAddrs: [`${relay.addr}/p2p-circuit`],
  })
  fleets.push(pub, nat)
  await pub.startCoordinator(['--bootstrap', relay.addr])
  await nat.startRelayedCoordinator(relay)
  return { relay, observers: relay.observers, pub, nat }
}

/**
 * Time from starting an agent process (already enrolled, so this is a restart) to
 * the coordinator acknowledging its first status report, per agent NAT and for a
 * public coordinator and one behind an eim NAT reached through a relay.
 */
async function agentStartToAck(samples: number): Promise<{ label: string; ms: number[] }[]> {
  const lab = createLab()
  const dir = await mkdtemp(join(tmpdir(), 'fm-bench-nat-'))
  const fleets: LabFleet[] = []
  try {
    const { relay, observers, pub, nat } = await twoCoordinators(lab, dir, fleets)
    const results: { label: string; ms: number[] }[] = []
    let n = 0
    for (const behaviour of ['eim', 'full-cone', 'symmetric'] as const) {
      for (const [fleet, where] of [
        [pub, 'public coordinator'],
        [nat, 'coordinator behind eim'],
      ] as const) {
        const host = lab.addPrivateHost(`b${n}`, lab.addRouter(`rb${n}`, { behaviour }))
        const machine = `bench-${n++}`
        const extra = ['--bootstrap', relay.addr, '--observers', observers]
        const first = await fleet.enrollAgent(host, machine, extra)
        first.proc.kill('SIGTERM')
        await first.proc.exited
        const ms: number[] = []
        for (let i = 0; i < samples; i++) {
          const t0 = performance.now()
          const proc = fleet.startAgent(host, machine, extra)
          await proc.waitFor((e) => e.event === 'acked', 60_000)
          ms.push(performance.now() - t0)
          proc.kill('SIGTERM')
          await proc.exited
        }
        results.push({ label: `agent behind ${behaviour}, ${where}`, ms })
      }
    }
    return results
  } finally {
    lab.destroy()
    await Promise.all(fleets.map((f) => f.remove()))
    await rm(dir, { recursive: true, force: true })
  }
}

/** The idle window bytes are counted over: a whole number of every keepalive period (10, 20, 30 s). */
const IDLE_WINDOW_MS = 60_000

/**
 * What an idle agent sends per hour (IP bytes its router forwards from it over
 * {@link IDLE_WINDOW_MS}, scaled): control-link pings, libp2p pings and the punch
 * port's NAT keepalive. One agent direct to a public coordinator, one relayed
 * (behind a symmetric NAT) to a coordinator behind NAT, both hole punching.
 */
export async function idleBytesPerHour(): Promise<{ label: string; bytesPerHour: number }[]> {
  const lab = createLab()
  const dir = await mkdtemp(join(tmpdir(), 'fm-bench-idle-'))
  const fleets: LabFleet[] = []
  try {
    const { relay, observers, pub, nat } = await twoCoordinators(lab, dir, fleets)
    const agents = [
      { label: 'idle agent behind eim, direct to a public coordinator', fleet: pub, nat: 'eim' as const },
      { label: 'idle agent behind symmetric, relayed', fleet: nat, nat: 'symmetric' as const },
    ]
    const counters = await Promise.all(
      agents.map(async (a, i) => {
        const router = lab.addRouter(`ri${i}`, { behaviour: a.nat })
        const host = lab.addPrivateHost(`idle${i}`, router)
        const agent = await a.fleet.enrollAgent(host, `idle-${i}`, [
          '--bootstrap',
          relay.addr,
          '--observers',
          observers,
        ])
        // settled: the first report acknowledged, the punch (if any) done
        await agent.proc.waitFor('acked', 30_000)
        return lab.countForwardedFrom(router, host.ip)
      }),
    )
    await sleep(IDLE_WINDOW_MS)
    return agents.map((a, i) => ({
      label: a.label,
      bytesPerHour: ((counters[i]?.() ?? Number.NaN) * 3_600_000) / IDLE_WINDOW_MS,
    }))
  } finally {
    lab.destroy()
    await Promise.all(fleets.map((f) => f.remove()))
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * Recovery after a relay loss (testkit/natlab/relay-scenarios.ts), a coordinator
 * behind NAT and an agent behind a symmetric NAT (agents ping every 1 s, so a
 * silent death shows after 3 s): one relay restarted 10 s after it died, from
 * the relay ready to the agent reconnected (goal: under 3 s); one of two relays
 * dying, from its death to the agent's link on the other one.
 */
async function relayRecovery(): Promise<Record<string, number>> {
  const lab = createLab()
  try {
    console.log('Recovery after a relay loss (coordinator behind eim, agent behind symmetric)')
    const restart = await relayRestart(lab, 10_000)
    const killed = await relayFailover(lab, 'kill')
    const vanished = await relayFailover(lab, 'vanish')
    return {
      'one relay restarted: relay ready → coordinator re-reserved': restart.reservedMs,
      'one relay restarted: relay ready → agent reconnected': restart.reconnectedMs,
      'one of two relays killed: death → agent linked via the other': killed.relinkedMs,
      'one of two relays vanished: death → agent linked via the other': vanished.relinkedMs,
      'agent started while one of two relays is gone: ready → linked': vanished.restartConnectMs,
    }
  } finally {
    lab.destroy()
  }
}

export async function benchNat(trials: number): Promise<Record<string, number>> {
  const check = canRunLab()
  if (!check.ok) {
    console.log(`  skipped: the NAT lab cannot run here (${check.reason})`)
    return {}
  }
  const pairs: [Side, Side, oneLan?: boolean][] = [
    ['eim', 'eim'],
    ['eim', 'public'],
    ['full-cone', 'eim'],
    ['eim', 'symmetric'],
    ['symmetric', 'symmetric'],
    // same-LAN peers: goal 20/20 direct, without hairpin
    ['eim', 'eim', true],
  ]
  const out: Record<string, number> = {}
  console.log(
    `Hole punching through the NAT lab, ${trials} relayed dials per pair (B dials A via a public relay)`,
  )
  console.log('  reference: go-libp2p DCUtR ≈ 70 % direct in the wild; js-libp2p on Node 0 %')
  for (const [a, b, oneLan] of pairs) {
    const r = await runPair(a, b, trials, oneLan)
    const sorted = [...r.toDirectMs].sort((x, y) => x - y)
    line(
      `${r.pair}`,
      `direct ${r.direct}/${r.attempts} (${fmt((r.direct / r.attempts) * 100)} %), ` +
        `median to direct ${r.direct > 0 ? `${fmt(percentile(sorted, 50), 0)} ms` : '-'}, delivered ${r.delivered}/${r.attempts}`,
    )
    out[`${r.pair} direct %`] = (r.direct / r.attempts) * 100
    out[`${r.pair} delivered %`] = (r.delivered / r.attempts) * 100
  }
  const samples = Math.max(1, Math.min(5, Math.round(trials / 4)))
  console.log(`Agent start → first acknowledged status report (process start included, median of ${samples})`)
  for (const r of await agentStartToAck(samples)) {
    const sorted = [...r.ms].sort((x, y) => x - y)
    line(r.label, `${fmt(percentile(sorted, 50))} ms`)
    out[`${r.label} start→ack ms`] = percentile(sorted, 50)
  }
  console.log(`Idle traffic per agent (IP bytes sent, counted at its router over ${IDLE_WINDOW_MS / 1000} s)`)
  for (const r of await idleBytesPerHour()) {
    line(r.label, `${fmt(r.bytesPerHour / 1024, 0)} KiB/h`)
    out[`${r.label} bytes/h`] = r.bytesPerHour
  }
  for (const [label, ms] of Object.entries(await relayRecovery())) {
    line(label, `${fmt(ms, 0)} ms`)
    out[`${label} ms`] = ms
  }
  Object.assign(out, await quicThroughLab(Math.max(20, trials * 5)))
  return out
}
