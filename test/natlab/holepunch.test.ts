// Feasibility of TCP hole punching from Node by simultaneous open, through real
// NATs in the lab (see docs/hole-punching-study.md). Each pair of punch.ts processes meets at a
// public rendezvous, then both net.connect to the other's observed endpoint from
// the local port they used for the rendezvous.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  canRunLab,
  createLab,
  type Lab,
  type LabHost,
  type LabProcess,
  type NatBehaviour,
  type ProbeEvent,
  probePath,
} from '../../testkit/natlab/lab.ts'
import type {
  DoneEvent,
  Endpoint,
  ListeningEvent,
  PeerEvent,
  TrialEvent,
  TrialFailure,
  TrialSuccess,
  UpgradedEvent,
} from '../../testkit/natlab/probe/events.ts'
import { eventFor, listen, open, startObserver, startPuppet } from '../../testkit/natlab/probe/sock-client.ts'

const check = canRunLab()
if (!check.ok) console.warn(`NAT hole-punch tests skipped: ${check.reason}`)

const ATTEMPT_TIMEOUT_MS = 300
const SYMMETRIC_DEADLINE_MS = 1_500

interface PairRun {
  label: string
  trials: number
  left: TrialEvent[]
  right: TrialEvent[]
  wallMs: number
}

interface PairOptions {
  session: string
  trials: number
  basePort: number
  args?: string[]
  leftArgs?: string[]
  rightArgs?: string[]
  deadlineMs?: number
}

function isTrial(event: ProbeEvent): event is TrialEvent {
  return event.event === 'trial'
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y)
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))] ?? Number.NaN
}

function successes(run: PairRun): Array<[TrialSuccess, TrialSuccess]> {
  const pairs: Array<[TrialSuccess, TrialSuccess]> = []
  for (let k = 0; k < run.trials; k++) {
    const l = run.left.find((t) => t.trial === k)
    const r = run.right.find((t) => t.trial === k)
    if (l?.ok === true && r?.ok === true) pairs.push([l, r])
  }
  return pairs
}

function summarize(run: PairRun): string {
  const ok = successes(run)
  const all = [...run.left, ...run.right]
  const errors: Record<string, number> = {}
  for (const t of all)
    for (const [code, n] of Object.entries(t.errors)) errors[code] = (errors[code] ?? 0) + n
  const connect = ok.map(([l, r]) => Math.max(l.connectMs, r.connectMs))
  const attempts = all.map((t) => t.attempts)
  const failures = all.filter((t): t is TrialFailure => !t.ok)
  const parts = [
    `${run.label}: ${ok.length}/${run.trials} direct`,
    ok.length > 0 ? `connect ms median ${percentile(connect, 0.5)} p95 ${percentile(connect, 0.95)}` : '',
    `attempts/side median ${percentile(attempts, 0.5)} max ${Math.max(...attempts)}`,
    `errors ${JSON.stringify(errors)}`,
    failures.length > 0
      ? `failed in ${Math.min(...failures.map((f) => f.elapsedMs))}-${Math.max(...failures.map((f) => f.elapsedMs))} ms with ${[...new Set(failures.map((f) => f.error.name))].join(',')}`
      : '',
    `wall ${run.wallMs} ms`,
  ]
  return parts.filter((p) => p !== '').join('; ')
}

describe.skipIf(!check.ok)('TCP hole punching by simultaneous open', () => {
  let lab: Lab
  let rendezvous: Endpoint
  const hosts = new Map<string, LabHost>()
  const report: string[] = []

  function host(name: string): LabHost {
    const h = hosts.get(name)
    if (h === undefined) throw new Error(`no lab host ${name}`)
    return h
  }

  function natted(name: string, behaviour: NatBehaviour): void {
    hosts.set(name, lab.addHome(name, behaviour))
  }

  async function punchPair(
    label: string,
    left: string,
    right: string,
    options: PairOptions,
  ): Promise<PairRun> {
    const deadlineMs = options.deadlineMs ?? 3_000
    const common = [
      '--rendezvous',
      `${rendezvous.address}:${rendezvous.port}`,
      '--session',
      options.session,
      '--trials',
      String(options.trials),
      '--base-port',
      String(options.basePort),
      '--attempt-timeout-ms',
      String(ATTEMPT_TIMEOUT_MS),
      '--deadline-ms',
      String(deadlineMs),
      ...(options.args ?? []),
    ]
    const started = Date.now()
    const spawnSide = (name: string, extra: string[] = []): LabProcess =>
      lab.spawnNode(host(name), probePath('punch.ts'), ['--name', name, ...common, ...extra])
    const sides = [spawnSide(left, options.leftArgs), spawnSide(right, options.rightArgs)]
    // Bounded: every trial ends by its deadline plus the payload exchange timeout.
    const budget = 5_000 + options.trials * (deadlineMs + 3_500)
    await Promise.all(sides.map((p) => p.waitFor<DoneEvent>('done', budget)))
    const [l, r] = sides.map((p) => p.events.filter(isTrial))
    const run: PairRun = {
      label,
      trials: options.trials,
      left: l ?? [],
      right: r ?? [],
      wallMs: Date.now() - started,
    }
    report.push(summarize(run))
    return run
  }

  /** Direct pairs: the connection reached the peer's public endpoint, roles are complementary, bytes went both ways. */
  function expectDirect(run: PairRun, left: string, right: string, basePort: number): void {
    for (const [l, r] of successes(run)) {
      const port = basePort + l.trial
      expect(l.remote).toEqual({ address: lab.publicAddressOf(host(right)), port })
      expect(r.remote).toEqual({ address: lab.publicAddressOf(host(left)), port })
      expect(l.local.port).toBe(port)
      expect(new Set([l.role, r.role])).toEqual(new Set(['initiator', 'responder']))
      expect(l.role).toBe(left < right ? 'initiator' : 'responder')
      expect(l.bytesReceived).toBe(65_536)
      expect(r.bytesReceived).toBe(65_536)
    }
  }

  /** Pairs that cannot punch: every trial ends, on time, with the typed error. */
  function expectCleanFailure(run: PairRun): void {
    expect(run.left).toHaveLength(run.trials)
    expect(run.right).toHaveLength(run.trials)
    for (const t of [...run.left, ...run.right]) {
      if (t.ok) continue
      expect(t.error.name).toBe('HolePunchTimeoutError')
      expect(t.error.message).toMatch(/no direct connection to .* after \d+ attempts/)
      expect(t.elapsedMs).toBeLessThan(SYMMETRIC_DEADLINE_MS + 1_000)
    }
  }

  beforeAll(async () => {
    lab = createLab()
    natted('a', 'eim')
    natted('b', 'eim')
    natted('e', 'eim')
    hosts.set('p', lab.addPublicHost('p'))
    natted('f', 'eim')
    natted('c', 'symmetric')
    natted('d', 'symmetric')
    natted('g', 'symmetric')
    natted('k', 'full-cone')
    natted('h', 'symmetric')
    hosts.set('q', lab.addPublicHost('q'))
    const z = lab.addPublicHost('z')
    const y = lab.addPublicHost('y')
    hosts.set('z', z)
    hosts.set('y', y)
    rendezvous = { address: z.ip, port: 7100 }
    await Promise.all([
      lab.spawnNode(z, probePath('rendezvous.ts'), ['--port', '7100']).waitFor<ListeningEvent>('listening'),
      startObserver(lab, z),
      startObserver(lab, y),
    ])
  })

  afterAll(() => {
    if (report.length > 0) console.log(`hole-punch matrix:\n  ${report.join('\n  ')}`)
    lab?.destroy()
  })

  it('eim × eim punches directly in at least 19 of 20 trials', async () => {
    const run = await punchPair('eim×eim', 'a', 'b', { session: 'ee', trials: 20, basePort: 41_000 })
    expect(successes(run).length).toBeGreaterThanOrEqual(19)
    expectDirect(run, 'a', 'b', 41_000)
  })

  it('public × eim punches directly in at least 19 of 20 trials', async () => {
    const run = await punchPair('public×eim', 'p', 'e', { session: 'pe', trials: 20, basePort: 41_000 })
    expect(successes(run).length).toBeGreaterThanOrEqual(19)
    expectDirect(run, 'p', 'e', 41_000)
  })

  it('eim × eim still punches when the rendezvous socket on L is closed first', async () => {
    const run = await punchPair('eim×eim, rendezvous closed', 'a', 'b', {
      session: 'ee-closed',
      trials: 10,
      basePort: 42_000,
      args: ['--keep-rendezvous', 'no'],
    })
    expect(successes(run).length).toBeGreaterThanOrEqual(9)
    expectDirect(run, 'a', 'b', 42_000)
  })

  it('retries recover when one side starts 500 ms late', async () => {
    const [natSkew, publicSkew] = await Promise.all([
      punchPair('eim×eim, b 500 ms late', 'a', 'b', {
        session: 'ee-skew',
        trials: 3,
        basePort: 43_000,
        rightArgs: ['--start-delay-ms', '500'],
      }),
      punchPair('eim×public, public 500 ms late', 'e', 'p', {
        session: 'pe-skew',
        trials: 3,
        basePort: 43_000,
        rightArgs: ['--start-delay-ms', '500'],
      }),
    ])
    expect(successes(natSkew)).toHaveLength(3)
    expect(successes(publicSkew)).toHaveLength(3)
    // The early side behind NAT is dropped by the late side's NAT: its attempts time out.
    expect(natSkew.left.every((t) => t.attempts > 1 && (t.errors.ETIMEDOUT ?? 0) > 0)).toBe(true)
    // Against a public host that is not connecting yet, its kernel answers RST.
    expect(publicSkew.left.every((t) => t.attempts > 1 && (t.errors.ECONNREFUSED ?? 0) > 0)).toBe(true)
  })

  it('a punched socket upgrades to a libp2p connection (Noise + Yamux) and carries pings both ways', async () => {
    const args = [
      '--rendezvous',
      `${rendezvous.address}:${rendezvous.port}`,
      '--session',
      'up',
      '--local-port',
      '45000',
    ]
    const sides = ['a', 'b'].map((name) => lab.spawnNode(host(name), probePath('libp2p-punch.ts'), args))
    const [peerA, peerB] = await Promise.all(sides.map((p) => p.waitFor<PeerEvent>('peer')))
    const [upA, upB] = await Promise.all(sides.map((p) => p.waitFor<UpgradedEvent>('upgraded', 20_000)))
    report.push(`libp2p upgrade over punched socket: ${JSON.stringify({ a: upA, b: upB })}`)
    expect(upA).toMatchObject({ ok: true, remotePeer: peerB?.peerId, encryption: '/noise', connections: 1 })
    expect(upB).toMatchObject({ ok: true, remotePeer: peerA?.peerId, encryption: '/noise', connections: 1 })
    expect(upA?.multiplexer).toMatch(/^\/yamux\//)
    // Exactly one side ran as initiator (multistream dialer, Noise initiator).
    expect(new Set([upA?.role, upB?.role])).toEqual(new Set(['initiator', 'responder']))
    expect(new Set([upA?.direction, upB?.direction])).toEqual(new Set(['outbound', 'inbound']))
    expect(upA?.remoteAddr).toBe(`/ip4/${lab.publicAddressOf(host('b'))}/tcp/45000/p2p/${peerB?.peerId}`)
  })

  it('pairs with a symmetric NAT fail cleanly with HolePunchTimeoutError within the deadline', async () => {
    const options = { trials: 2, basePort: 41_000, deadlineMs: SYMMETRIC_DEADLINE_MS }
    const runs = await Promise.all([
      punchPair('eim×symmetric', 'f', 'c', { ...options, session: 'es' }),
      punchPair('symmetric×symmetric', 'd', 'g', { ...options, session: 'ss' }),
      punchPair('full-cone×symmetric', 'k', 'h', { ...options, session: 'fs' }),
    ])
    for (const run of runs) expectCleanFailure(run)
  })
})

describe.skipIf(!check.ok)('reusing one local port for several sockets (Node on Linux)', () => {
  let lab: Lab
  let puppet: LabProcess
  let z: Endpoint
  let y: Endpoint

  beforeAll(async () => {
    lab = createLab()
    const q = lab.addPublicHost('q')
    ;[z, y, puppet] = await Promise.all([
      startObserver(lab, lab.addPublicHost('z')),
      startObserver(lab, lab.addPublicHost('y')),
      startPuppet(lab, q),
    ])
  })

  afterAll(() => lab?.destroy())

  it('a socket bound to L can connect while another socket from L is connected elsewhere', async () => {
    expect(await open(puppet, 'r1', z, { localPort: 44_000 })).toMatchObject({
      event: 'connected',
      localPort: 44_000,
    })
    expect(await open(puppet, 'r2', y, { localPort: 44_000 })).toMatchObject({
      event: 'connected',
      localPort: 44_000,
    })
  })

  it('the same 4-tuple twice fails with EADDRNOTAVAIL', async () => {
    expect(await open(puppet, 's1', z, { localPort: 44_001 })).toMatchObject({ event: 'connected' })
    expect(await open(puppet, 's2', z, { localPort: 44_001 })).toMatchObject({
      event: 'error',
      code: 'EADDRNOTAVAIL',
    })
  })

  it('after an active close (TIME_WAIT) the same 4-tuple can be connected again from the bound port', async () => {
    expect(await open(puppet, 't1', z, { localPort: 44_002 })).toMatchObject({ event: 'connected' })
    puppet.send({ cmd: 'end', id: 't1' })
    await puppet.waitFor(eventFor('t1', 'closed'))
    // Linux lets an explicitly bound connect() take over a TIME_WAIT tuple when
    // TCP timestamps are on (the default): re-punching the same pair works.
    expect(await open(puppet, 't2', z, { localPort: 44_002 })).toMatchObject({ event: 'connected' })
  })

  it('a listening socket on L makes outbound binds to L fail with EADDRINUSE (why libp2p cannot dial from its listen port)', async () => {
    expect(await listen(puppet, 'l1', 44_003)).toMatchObject({ event: 'listening', port: 44_003 })
    expect(await open(puppet, 'u1', z, { localPort: 44_003 })).toMatchObject({
      event: 'error',
      code: 'EADDRINUSE',
    })
  })

  it("Node 24's listen({ reusePort: true }) does not help: net.connect cannot set SO_REUSEPORT", async () => {
    expect(await listen(puppet, 'l2', 44_004, { reusePort: true })).toMatchObject({ event: 'listening' })
    expect(await open(puppet, 'w1', z, { localPort: 44_004 })).toMatchObject({
      event: 'error',
      code: 'EADDRINUSE',
    })
  })

  it('the order matters: listening on L after a socket from L connected succeeds, later binds fail', async () => {
    expect(await open(puppet, 'v1', z, { localPort: 44_005 })).toMatchObject({ event: 'connected' })
    expect(await listen(puppet, 'l3', 44_005)).toMatchObject({ event: 'listening' })
    expect(await open(puppet, 'v2', y, { localPort: 44_005 })).toMatchObject({
      event: 'error',
      code: 'EADDRINUSE',
    })
  })
})
