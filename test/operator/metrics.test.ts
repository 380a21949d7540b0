/**
 * `--metrics` on real daemons: a relay, a coordinator holding a reservation
 * on it, and an enrolled agent that takes a deployment. Each serves
 * Prometheus text on 127.0.0.1:0 (the bound address printed as a `metrics`
 * event); the values an operator relies on are read from the scrapes, and
 * every scrape passes `promtool check metrics` (Debian's prometheus package).
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { HolePunchService, PunchAttempt } from '../../net/holepunch/index.ts'
import type { FleetHost } from '../../net/host.ts'
import { createHost } from '../../net/host.ts'
import { metricsRegistry } from '../../net/metrics-server.ts'
import { holePunchMetrics } from '../../net/net-metrics.ts'
import { PROTOCOLS } from '../../protocol/ids.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, Proc, runCli, TestFleet } from '../../testkit/harness.ts'

const PROMTOOL = '/usr/bin/promtool'

/** One sample of a scrape: its value, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m?.[1] !== name) continue
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]))
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3])
  }
  return undefined
}

const metricsUrl = (e: Event) => String(e.url)
const isMetrics = (e: Event) => e.event === 'metrics'

async function scrape(proc: Proc): Promise<string> {
  const res = await fetch(metricsUrl(await proc.waitFor(isMetrics, 30_000, `${proc.name} metrics`)))
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toContain('text/plain')
  return res.text()
}

let fleet: TestFleet
let relay: Proc
let coordinator: Proc
let agent: Proc
let stranger: FleetHost | undefined

beforeAll(async () => {
  fleet = await TestFleet.create()
  const metrics = ['--metrics', '127.0.0.1:0']
  relay = new Proc('relay', [
    'relay',
    '--state',
    join(fleet.dir, 'relay'),
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--observer-ports',
    'none',
    '--json',
    ...metrics,
  ])
  fleet.procs.push(relay)
  const relayReady = await relay.waitFor((e) => e.event === 'ready', 30_000, 'relay ready')
  const relayAddr = String((relayReady.addrs as string[])[0])
  coordinator = await fleet.startCoordinator([...metrics, '--reserve-on', relayAddr])
  await coordinator.waitFor((e) => e.event === 'reservation' && e.status === 'ok', 30_000, 'reservation')
  agent = fleet.startAgent('edge-1', ['--token', await fleet.token('edge-1'), ...metrics])
  await agent.waitFor((e) => e.event === 'connected', 30_000, 'edge-1 connected')
  const archive = await makeArchive(fleet.dir, { version: 'v1' })
  const deployed = await fleet.deploy(archive, 'edge-1', 'gen-1', ['--no-watch'])
  expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
  const committed = await agent.waitFor((e) => e.event === 'status' && e.state === 'committed', 60_000)
  // stored by the coordinator, and gone from the agent's outbox
  await coordinator.waitFor((e) => e.event === 'status' && e.state === 'committed', 30_000)
  await agent.waitFor((e) => e.event === 'acked' && Number(e.seq) >= Number(committed.seq), 30_000)
}, 180_000)

afterAll(async () => {
  await stranger?.stop()
  await fleet?.stop()
})

describe('coordinator --metrics', () => {
  it('counts the connected agent by path and transport, the report, the manifest and the update state', async () => {
    const text = await scrape(coordinator)
    // the fleet file names the coordinator's TCP address only
    expect(sample(text, 'fleetmesh_agents_connected', { path: 'direct', transport: 'tcp' })).toBe(1)
    for (const [path, transport] of [
      ['direct', 'quic'],
      ['relayed', 'tcp'],
      ['relayed', 'quic'],
    ] as const)
      expect(sample(text, 'fleetmesh_agents_connected', { path, transport })).toBe(0)
    expect(sample(text, 'fleetmesh_reports_ingested_total')).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'fleetmesh_report_commit_seconds_count')).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'fleetmesh_manifests_pushed_total')).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'fleetmesh_machines', { state: 'committed' })).toBe(1)
    expect(sample(text, 'fleetmesh_machines', { state: 'failed' })).toBe(0)
    expect(sample(text, 'fleetmesh_relay_reservations_held')).toBe(1)
    expect(sample(text, 'fleetmesh_process_cpu_seconds_total')).toBeGreaterThan(0)
  })

  it('counts a control stream refused to a peer that is not enrolled', async () => {
    const ready = await coordinator.waitFor((e) => e.event === 'ready')
    const before = sample(await scrape(coordinator), 'fleetmesh_frames_refused_total', {
      reason: 'not-enrolled',
    })
    expect(before).toBe(0)
    stranger = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519'), listen: [] })
    const coordinatorId = peerIdFromString(String(ready.peerId))
    await stranger.peerStore.merge(coordinatorId, {
      multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
    })
    await stranger.dialProtocol(coordinatorId, PROTOCOLS.control)
    const id = stranger.peerId.toString()
    const refused = (e: Event) => e.event === 'log' && String(e.msg).includes(id)
    // the coordinator counts the refusal as it logs it
    await coordinator.waitFor(refused, 30_000, 'the refusal')
    const after = await scrape(coordinator)
    expect(sample(after, 'fleetmesh_frames_refused_total', { reason: 'not-enrolled' })).toBe(1)
  })

  it('answers 404 beside /metrics', async () => {
    const url = new URL(metricsUrl(await coordinator.waitFor(isMetrics)))
    expect((await fetch(new URL('/', url))).status).toBe(404)
    expect((await fetch(new URL('/metrics/x', url))).status).toBe(404)
  })
})

describe('relay --metrics', () => {
  it("serves the coordinator's reservation", async () => {
    const text = await scrape(relay)
    expect(sample(text, 'fleetmesh_relay_reservations_served')).toBe(1)
    expect(sample(text, 'fleetmesh_relay_connections_open')).toBe(0)
    expect(sample(text, 'fleetmesh_peers_connected')).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'fleetmesh_process_resident_memory_bytes')).toBeGreaterThan(0)
  })
})

describe('agent --metrics', () => {
  it('shows the direct link, the committed update and an empty outbox', async () => {
    const text = await scrape(agent)
    expect(sample(text, 'fleetmesh_link_connected', { path: 'direct' })).toBe(1)
    expect(sample(text, 'fleetmesh_link_connected', { path: 'relayed' })).toBe(0)
    expect(sample(text, 'fleetmesh_update_state', { state: 'committed' })).toBe(1)
    expect(sample(text, 'fleetmesh_update_state', { state: 'activating' })).toBe(0)
    expect(sample(text, 'fleetmesh_last_update_seconds')).toBeGreaterThan(0)
    expect(sample(text, 'fleetmesh_reports_queued')).toBe(0)
  })
})

describe.skipIf(!existsSync(PROMTOOL))(
  `promtool check metrics (skipped: no ${PROMTOOL}; CI installs it)`,
  () => {
    it.each([
      ['coordinator', () => coordinator],
      ['relay', () => relay],
      ['agent', () => agent],
    ])('finds no problem in the %s scrape', async (_name, proc) => {
      const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: await scrape(proc()), encoding: 'utf8' })
      expect({ code: r.status, out: r.stdout + r.stderr }).toEqual({ code: 0, out: '' })
    })
  },
)

describe('--metrics values', () => {
  it.each([
    [['--metrics', 'localhost'], 'is not host:port'],
    [['--metrics', '127.0.0.1:70000'], 'is not host:port'],
    [['--metrics', '0.0.0.0:0'], 'not a loopback address'],
  ])('%j is refused before the daemon starts', async (args, message) => {
    const r = await runCli(['relay', '--state', join(fleet.dir, 'bad-relay'), ...args])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(message)
    expect(existsSync(join(fleet.dir, 'bad-relay'))).toBe(false)
  })
})

describe('a daemon that fails to start with --metrics', () => {
  it('closes the endpoint and exits', async () => {
    // the running relay holds this state directory's lock
    const args = ['relay', '--state', join(fleet.dir, 'relay'), '--listen', '/ip4/127.0.0.1/tcp/0']
    // a listening endpoint left open would keep the process alive: runCli would time out
    const r = await runCli([...args, '--metrics', '127.0.0.1:0', '--json'], {}, 30_000)
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('"event":"metrics"')
  })
})

describe('hole-punch counters', () => {
  it("count the attempts tried and their successes by both NAT kinds, from the service's events", async () => {
    const events = new EventTarget()
    const service = {
      status: () => ({ natKind: 'endpoint-independent' }),
      addEventListener: (type: string, l: (e: globalThis.Event) => void) => events.addEventListener(type, l),
      removeEventListener: (type: string, l: (e: globalThis.Event) => void) =>
        events.removeEventListener(type, l),
    } as unknown as HolePunchService
    const host = { services: { holePunch: service } } as unknown as FleetHost
    const registry = await metricsRegistry()
    const stop = await holePunchMetrics(host, registry)
    const base = { peer: 'p', ms: 5, role: 'initiator', trigger: 'auto', at: 0, remoteNat: 'none' } as const
    const attempt = (a: Partial<PunchAttempt>) =>
      events.dispatchEvent(new CustomEvent('attempt', { detail: { ...base, ok: false, ...a } }))
    attempt({ ok: true })
    attempt({ error: { name: 'HolePunchTimeoutError', message: 'no simultaneous open' } })
    attempt({ skipped: 'backoff' })
    stop()
    attempt({ ok: true }) // after stop: not counted
    const text = await registry.metrics()
    const labels = { nat: 'endpoint-independent', peer_nat: 'none' }
    expect(sample(text, 'fleetmesh_holepunch_attempts_total', labels)).toBe(2)
    expect(sample(text, 'fleetmesh_holepunch_successes_total', labels)).toBe(1)
  })
})
