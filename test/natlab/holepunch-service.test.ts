// The hole-punching service (protocol/holepunch) end to end through real NATs:
// a public relay that also runs the observer, peers behind NAT routers that
// reserve on it, one dials the other through the relay, and the service
// replaces the relayed connection with a direct one (or, with a symmetric NAT
// on one side, leaves the relay alone). Every peer is a holepunch-node.ts
// process in its lab namespace; the test follows their JSON events.

import net from 'node:net'
import type { Logger } from '@libp2p/interface'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeCanonical } from '../../keys/canonical.ts'
import { classifyNat, type PunchAttempt, startObserver } from '../../net/holepunch/index.ts'
import { type ConnectMessage, connectSchema, decodeHolePunch } from '../../net/holepunch/messages.ts'
import { NatObserver } from '../../net/holepunch/observer-client.ts'
import { pickPunchPort } from '../../net/holepunch/punch-port.ts'
import { encodeMessage } from '../../protocol/codec.ts'
import { canRunLab, createLab, type Lab, type ProbeEvent } from '../../testkit/natlab/lab.ts'
import {
  attemptWith,
  command,
  connEvent,
  type HolepunchPeer,
  startHolepunchPeer,
  startHolepunchRelay,
} from '../../testkit/natlab/probe-commands.ts'

const check = canRunLab()
if (!check.ok) console.warn(`hole-punch service tests skipped: ${check.reason}`)

const TRIALS = 20
interface ConnEvent extends ProbeEvent {
  event: 'conn-open' | 'conn-close' | 'dialed'
  peer: string
  id: string
  addr: string
  relayed: boolean
}

interface EchoEvent extends ProbeEvent {
  event: 'echo'
  ok: boolean
  relayed: boolean
  addr: string
}

interface PunchedEvent extends ProbeEvent {
  event: 'punched'
  ok: boolean
  ms: number
  error?: { name: string; message: string }
}

type AttemptEvent = ProbeEvent & PunchAttempt & { event: 'attempt' }

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y)
  const mid = Math.floor(sorted.length / 2)
  if (sorted.length === 0) return Number.NaN
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
}

/** The side whose peer id sorts first: it initiates the punch and the Noise handshake */
function initiatorOf(x: HolepunchPeer, y: HolepunchPeer): [HolepunchPeer, HolepunchPeer] {
  return x.id < y.id ? [x, y] : [y, x]
}

describe.skipIf(!check.ok)('hole-punching service through NAT routers', () => {
  let lab: Lab
  const peers = new Map<string, HolepunchPeer>()
  const report: string[] = []

  function peer(name: string): HolepunchPeer {
    const p = peers.get(name)
    if (p === undefined) throw new Error(`no peer ${name}`)
    return p
  }

  beforeAll(async () => {
    lab = createLab()
    const relayHost = lab.addPublicHost('relay')
    // every home on 192.168.1.0/24, so a punch aimed at a private address
    // would reach the wrong host (or nothing)
    const hosts = {
      a: lab.addHome('a', 'eim'),
      b: lab.addHome('b', 'eim'),
      c: lab.addHome('c', 'symmetric'),
      d: lab.addHome('d', 'eim'),
    }
    const relay = await startHolepunchRelay(lab, relayHost, 20_000)

    await Promise.all(
      Object.entries(hosts).map(async ([name, host]) => {
        // a is dialled 20 times in a row through the relay: as an agent it would
        // refuse the sixth within a second (libp2p rate-limits inbound
        // connections per remote IP, and relayed ones all come from the
        // relay's IP); a coordinator behind NAT allows 100 per second
        const role = name === 'a' ? 'coordinator' : 'agent'
        const args = ['--role', role, '--reserve-on', relay.addr, '--observers', relay.observers]
        // a and b retry at once after a failed trial, so one failure cannot
        // turn into a backoff that skips the trials after it; c and d keep the
        // default backoff, which the symmetric test checks
        if (name === 'a' || name === 'b') args.push('--backoff-ms', '0', '--deadline-ms', '3000')
        else args.push('--deadline-ms', '1500')
        peers.set(name, await startHolepunchPeer(lab, host, args, 20_000))
      }),
    )
  })

  afterAll(() => {
    if (report.length > 0) console.log(`hole-punch service:\n  ${report.join('\n  ')}`)
    lab?.destroy()
  })

  it('observes each NAT from the punch port: endpoint-independent behind eim, symmetric behind symmetric', () => {
    for (const name of ['a', 'b', 'd']) {
      const p = peer(name)
      expect(p.ready.natKind, name).toBe('endpoint-independent')
      // MASQUERADE preserves the port: the observed endpoint is the router's address and the punch port
      expect(p.ready.observed).toEqual({ address: p.host.router?.publicIp, port: p.ready.punchPort })
    }
    expect(peer('c').ready.natKind).toBe('symmetric')
  })

  it(`eim × eim: a relayed connection becomes direct in at least ${TRIALS - 1} of ${TRIALS} trials`, async () => {
    const a = peer('a')
    const b = peer('b')
    const [initiator] = initiatorOf(a, b)
    const toDirectMs: number[] = []
    const attemptMs: number[] = []
    const failures: string[] = []
    for (let trial = 0; trial < TRIALS; trial++) {
      const sent = performance.now()
      // b dials a through the relay; a's side of it shows up as an inbound relayed connection
      const dialed = await command<ConnEvent>(b, { cmd: 'dial', addr: a.circuit }, 'dialed')
      expect(dialed.relayed).toBe(true)
      const aRelayed = await a.proc.waitFor<ConnEvent>(connEvent('conn-open', b.id, true))
      const [atA, atB] = await Promise.all([
        a.proc.waitFor<AttemptEvent>(attemptWith(b.id), 15_000),
        b.proc.waitFor<AttemptEvent>(attemptWith(a.id), 15_000),
      ])
      if (!(atA.ok && atB.ok)) {
        failures.push(`trial ${trial}: a ${JSON.stringify(atA.error)} b ${JSON.stringify(atB.error)}`)
        await command(b, { cmd: 'hangup', peer: a.id }, 'hungup')
        await Promise.all([
          a.proc.waitFor(connEvent('conn-close', b.id, true, aRelayed.id)),
          b.proc.waitFor(connEvent('conn-close', a.id, true, dialed.id)),
        ])
        continue
      }
      expect(atA.trigger).toBe(initiator === a ? 'auto' : 'remote')
      expect(atB.trigger).toBe(initiator === b ? 'auto' : 'remote')
      // the direct connection opens on both sides and the relayed one closes on both
      const [aDirect, bDirect] = await Promise.all([
        a.proc.waitFor<ConnEvent>(connEvent('conn-open', b.id, false)),
        b.proc.waitFor<ConnEvent>(connEvent('conn-open', a.id, false)),
      ])
      toDirectMs.push(Math.round(performance.now() - sent))
      attemptMs.push((initiator === a ? atA : atB).ms)
      await Promise.all([
        a.proc.waitFor(connEvent('conn-close', b.id, true, aRelayed.id)),
        b.proc.waitFor(connEvent('conn-close', a.id, true, dialed.id)),
      ])
      expect(bDirect.addr).toBe(`/ip4/${a.host.router?.publicIp}/tcp/${a.ready.punchPort}/p2p/${a.id}`)
      expect(aDirect.addr).toBe(`/ip4/${b.host.router?.publicIp}/tcp/${b.ready.punchPort}/p2p/${b.id}`)

      // an application protocol runs over the direct connection
      const echo = await command<EchoEvent>(b, { cmd: 'echo', peer: a.id, text: `trial ${trial}` }, 'echo')
      expect(echo).toMatchObject({ ok: true, relayed: false, id: bDirect.id })

      // start the next trial from scratch: no connection between them
      await command(b, { cmd: 'hangup', peer: a.id }, 'hungup')
      await a.proc.waitFor(connEvent('conn-close', b.id, false, aDirect.id))
    }
    const ok = toDirectMs.length
    report.push(
      `eim×eim: ${ok}/${TRIALS} direct; time to direct (dial sent → direct connection open on both) ` +
        `median ${median(toDirectMs)} ms, max ${Math.max(...toDirectMs)} ms; ` +
        `initiator's attempt (relayed open → upgraded) median ${median(attemptMs)} ms` +
        (failures.length > 0 ? `; failures: ${failures.join(' | ')}` : ''),
    )
    expect(ok).toBeGreaterThanOrEqual(TRIALS - 1)
  })

  it('eim × symmetric: no punch, the relayed connection stays and works; a forced punch fails cleanly', async () => {
    const c = peer('c')
    const d = peer('d')
    const [initiator, responder] = initiatorOf(c, d)
    const dialed = await command<ConnEvent>(c, { cmd: 'dial', addr: d.circuit }, 'dialed')
    expect(dialed.relayed).toBe(true)

    // the lower peer id decides: c skips at once (its own NAT is symmetric);
    // d learns c's NAT kind in the exchange and aborts there, and c hears so
    const skipped = await initiator.proc.waitFor<AttemptEvent>(attemptWith(responder.id))
    expect(skipped).toMatchObject({ ok: false, skipped: 'symmetric-nat', trigger: 'auto' })
    if (initiator === d) {
      const told = await c.proc.waitFor<AttemptEvent>(attemptWith(d.id))
      expect(told).toMatchObject({ ok: false, skipped: 'symmetric-nat', role: 'responder' })
    }
    const echo = await command<EchoEvent>(c, { cmd: 'echo', peer: d.id, text: 'via relay' }, 'echo')
    expect(echo).toMatchObject({ ok: true, relayed: true, id: dialed.id })

    // a new relayed connection within the backoff is left alone, and says so
    await command(c, { cmd: 'hangup', peer: d.id }, 'hungup')
    await command(c, { cmd: 'dial', addr: d.circuit }, 'dialed')
    const backoff = await initiator.proc.waitFor<AttemptEvent>(attemptWith(responder.id))
    expect(backoff).toMatchObject({ ok: false, skipped: 'backoff' })
    expect(backoff.error?.message).toMatch(/symmetric NAT/)
    const status = await command<
      ProbeEvent & { status: { attempts: Record<string, { backoffUntil?: number }> } }
    >(initiator, { cmd: 'status' }, 'status')
    expect(status.status.attempts[responder.id]?.backoffUntil).toBeGreaterThan(Date.now())

    // asked explicitly by the eim side (d): d coordinates whatever the peer
    // ids, learns c's NAT kind in the exchange and aborts it there
    const asked = await command<PunchedEvent>(d, { cmd: 'punch', peer: c.id }, 'punched')
    expect(asked).toMatchObject({ ok: false, error: { name: 'HolePunchSkippedError' } })
    expect(asked.error?.message).toMatch(/peer is behind a symmetric NAT/)
    const aborted = await c.proc.waitFor<AttemptEvent>(attemptWith(d.id))
    expect(aborted).toMatchObject({
      ok: false,
      skipped: 'symmetric-nat',
      role: 'responder',
      trigger: 'remote',
    })

    // forced anyway: both punch, nothing gets through, the typed error comes by the deadline (1.5 s)
    const punched = await command<PunchedEvent>(
      d,
      { cmd: 'punch', peer: c.id, force: true },
      'punched',
      15_000,
    )
    expect(punched.ok).toBe(false)
    expect(punched.error?.name).toBe('HolePunchTimeoutError')
    expect(punched.ms).toBeLessThan(1_500 + 1_500)
    const after = await command<EchoEvent>(c, { cmd: 'echo', peer: d.id, text: 'still relayed' }, 'echo')
    expect(after).toMatchObject({ ok: true, relayed: true })
    for (const p of [c, d]) {
      expect(p.proc.events.some((e) => connEvent('conn-open', p === c ? d.id : c.id, false)(e))).toBe(false)
    }
    report.push(
      `eim×symmetric: 0 direct (by design); auto attempt skipped by ${initiator.name} (${skipped.ms} ms); ` +
        `forced punch failed with ${punched.error?.name} after ${punched.ms} ms; relay kept`,
    )
  })
})

const silent: Logger = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
  newScope: () => silent,
})

// No lab needed: the pieces that decide whether to punch at all.
describe('observer, NAT classification and message validation (loopback)', () => {
  it('an observer tells the punch port what it sees; no NAT on loopback, bad observers are reported', async () => {
    const observer = await startObserver({ host: '127.0.0.1', ports: [0, 0] })
    // not a fleetmesh observer: 600 bytes and no newline
    const impostor = net.createServer((socket) => {
      socket.on('error', () => {})
      socket.write('x'.repeat(600))
    })
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve))
    const impostorPort = (impostor.address() as net.AddressInfo).port
    const localPort = await pickPunchPort()
    const loopback = (port: number) => ({ address: '127.0.0.1', port })
    const nat = new NatObserver({
      observers: [...observer.ports.map(loopback), loopback(impostorPort)],
      localPort,
      timeoutMs: 2_000,
      reprobeIntervalMs: 60_000,
      log: silent,
    })
    try {
      nat.start()
      const seen = await nat.ready(5_000)
      expect(seen.natKind).toBe('none')
      expect(seen.observed).toEqual({ address: '127.0.0.1', port: localPort })
      expect(seen.observers[2]?.error).toMatch(/^ObserverResponseError: /)
      // asking again reuses the kept connection and the second observer's tuple
      expect((await nat.probe()).observed).toEqual(seen.observed)
    } finally {
      nat.stop()
      impostor.close()
      await observer.close()
    }
  })

  it('classifies from what the observers saw', () => {
    const local = { address: '192.168.1.10', port: 61_000 }
    const at = (port: number) => ({ local, observed: { address: '203.0.113.10', port } })
    expect(classifyNat([at(61_000), at(61_000)])).toBe('endpoint-independent')
    expect(classifyNat([at(61_000), at(40_123)])).toBe('symmetric')
    expect(classifyNat([at(61_000)])).toBe('unknown')
    expect(classifyNat([])).toBe('unknown')
    expect(classifyNat([{ local, observed: local }])).toBe('none')
  })

  it('rejects coordination messages with bad fields or beyond the size bound', () => {
    const valid: ConnectMessage = {
      type: 'connect',
      nat: 'endpoint-independent',
      observed: [{ address: '203.0.113.10', port: 61_000 }],
    }
    const frame = encodeMessage(connectSchema, valid)
    expect(decodeHolePunch(connectSchema, frame, 'connect')).toEqual(valid)
    // encodeCanonical, not encodeMessage: the latter refuses to send invalid messages
    const bad = (value: unknown) => () => decodeHolePunch(connectSchema, encodeCanonical(value), 'connect')
    expect(bad({ ...valid, observed: [{ address: 'example.com', port: 1 }] })).toThrow(
      /invalid holepunch connect/,
    )
    expect(bad({ ...valid, extra: 1 })).toThrow(/invalid holepunch connect/)
    expect(() => decodeHolePunch(connectSchema, new Uint8Array(2048), 'connect')).toThrow(/1024-byte limit/)
  })
})
