// Fleet traversal through real NATs: relay, coordinators, agents and the admin
// CLI as separate fleetmesh processes in lab namespaces (see lab.ts and
// fleet-lab.ts). Two fleets share one relay: "pub" has its coordinator on the
// public segment, "nat" has it behind its own eim NAT, holding a reservation on
// the relay and found through it. Agents sit behind eim, symmetric and
// full-cone NATs. Every wait is on an event a process printed.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHost } from '../../net/host.ts'
import { repairReservationExpiry } from '../../net/reservation-expiry.ts'
import type { ConnectionPath } from '../../protocol/index.ts'
import { waitForFile } from '../../testkit/harness.ts'
import { after, LabFleet, type LabRelay, startLabRelay } from '../../testkit/natlab/fleet-lab.ts'
import {
  canRunLab,
  createLab,
  type Lab,
  type LabHost,
  type LabProcess,
  type NatBehaviour,
  type ProbeEvent,
} from '../../testkit/natlab/lab.ts'

const check = canRunLab()
if (!check.ok) console.warn(`NAT traversal tests skipped: ${check.reason}`)

/** Agents run with --keepalive 1s: dead after 3 s without a frame. */
const RECONNECT_BOUND_MS = 10_000

const sinceMs = (e: ProbeEvent, t0: number): number => Date.parse(String(e.at)) - t0

describe.skipIf(!check.ok)('fleet traversal through NATs', () => {
  let lab: Lab
  let relayDir: string
  let relay: LabRelay
  let pub: LabFleet
  let nat: LabFleet
  let coordNat: LabHost
  let observers: string
  const timings: string[] = []

  beforeAll(async () => {
    const t0 = Date.now()
    lab = createLab()
    const admin = lab.addPublicHost('admin')
    const relayHost = lab.addPublicHost('relay')
    const coordPub = lab.addPublicHost('coordpub')
    coordNat = lab.addPrivateHost('coordnat', lab.addRouter('cnat', { behaviour: 'eim' }))
    relayDir = await mkdtemp(join(tmpdir(), 'fm-lab-relay-'))
    relay = await startLabRelay(lab, relayHost, relayDir)
    const circuit = `${relay.addr}/p2p-circuit`
    ;[pub, nat] = await Promise.all([
      LabFleet.create(lab, { name: 'pub', admin, coordinator: coordPub }),
      // tokens and the admin reach this coordinator through the relay only
      LabFleet.create(lab, { name: 'nat', admin, coordinator: coordNat, coordinatorAddrs: [circuit] }),
    ])
    observers = relay.observers
    // the NATed coordinator also runs the hole-punching service (observers on the relay)
    const natArgs = [
      '--reserve-on',
      relay.addr,
      '--bootstrap',
      relay.addr,
      '--reserve-keepalive',
      '1s',
      '--observers',
      observers,
    ]
    await Promise.all([pub.startCoordinator(['--bootstrap', relay.addr]), nat.startCoordinator(natArgs)])
    const reserved = await nat.coordinator!.waitFor(
      (e) => e.event === 'reservation' && e.status === 'ok',
      30_000,
    )
    expect(reserved.addrs).toContain(`${circuit}/p2p/${nat.coordinatorPeerId}`)
    timings.push(`setup (lab, relay, 2 fleets, reservation): ${Date.now() - t0} ms`)
  }, 90_000)

  afterAll(async () => {
    lab?.destroy()
    await Promise.all([
      pub?.remove(),
      nat?.remove(),
      relayDir && rm(relayDir, { recursive: true, force: true }),
    ])
    if (timings.length > 0) console.log(`traversal timings:\n  ${timings.join('\n  ')}`)
  })

  let seq = 0
  function agentHost(behaviour: NatBehaviour): LabHost {
    const n = seq++
    return lab.addPrivateHost(`a${n}`, lab.addRouter(`r${n}`, { behaviour }))
  }

  async function enrollDeploy(
    fleet: LabFleet,
    behaviour: NatBehaviour,
    machine: string,
    extra: string[] = [],
  ) {
    const t0 = Date.now()
    const host = agentHost(behaviour)
    const agent = await fleet.enrollAgent(host, machine, extra)
    const tConnected = Date.now()
    const r = await fleet.deploy(machine, 'v1')
    expect(r.stdout).toContain('settled: 1 committed, 0 not')
    await agent.proc.waitFor((e) => e.event === 'status' && e.state === 'committed', 10_000)
    const row = (await fleet.machines()).find((m) => m.name === machine)
    timings.push(
      `${machine}: enroll+connect ${tConnected - t0} ms, deploy ${r.ms} ms, total ${Date.now() - t0} ms`,
    )
    return { agent, row, host }
  }

  for (const behaviour of ['eim', 'symmetric', 'full-cone'] as const) {
    it(`agent behind ${behaviour} NAT, public coordinator: enroll, deploy, commit, path direct`, async () => {
      const { agent, row } = await enrollDeploy(pub, behaviour, `pub-${behaviour}`)
      expect(agent.connected.path).toBe('direct')
      expect(row).toMatchObject({ state: 'committed', currentGeneration: 'v1', online: true, path: 'direct' })
    })

    it(`agent behind ${behaviour} NAT, coordinator behind eim NAT: through the relay, path relayed`, async () => {
      const { agent, row } = await enrollDeploy(nat, behaviour, `nat-${behaviour}`, [
        '--bootstrap',
        relay.addr,
      ])
      expect(agent.connected.path).toBe('relayed')
      expect(String(agent.connected.addr)).toContain(`/p2p/${relay.peerId}/p2p-circuit`)
      expect(row).toMatchObject({
        state: 'committed',
        currentGeneration: 'v1',
        online: true,
        path: 'relayed',
      })
    })
  }

  for (const behaviour of ['eim', 'full-cone'] as const) {
    it(`agent behind ${behaviour} NAT, coordinator behind eim NAT, both punching: the relayed link becomes direct`, async () => {
      const t0 = Date.now()
      const host = agentHost(behaviour)
      const agent = await nat.enrollAgent(host, `nat-punch-${behaviour}`, [
        '--bootstrap',
        relay.addr,
        '--observers',
        observers,
      ])
      // The only address the agent knows is the relay's circuit address, so it starts
      // relayed; the punch then closes the relayed connection (often before the control
      // stream opens on it) and the link runs over the direct one.
      // (enrollAgent already took the first `connected` event, which is direct when the
      // punch won the race against the control stream)
      const direct =
        agent.connected.path === 'direct'
          ? agent.connected
          : await agent.proc.waitFor((e) => e.event === 'connected' && e.path === 'direct', 30_000)
      expect(String(direct.addr)).not.toContain('p2p-circuit')
      timings.push(
        `nat-punch-${behaviour}: direct control link after ${Date.now() - t0} ms (first link ${String(agent.connected.path)})`,
      )
      // what the agent reports for `fleetmesh doctor` (runtime.json is rewritten every
      // 5 s and on link changes): a successful punch with the coordinator
      const punched = (text: string) => {
        const hp = JSON.parse(text).details?.holePunch
        return hp?.attempts?.[nat.coordinatorPeerId]?.ok === true && hp.natKind === 'endpoint-independent'
      }
      await waitForFile(
        join(nat.agentState(`nat-punch-${behaviour}`), 'runtime.json'),
        (t) => {
          try {
            return punched(t)
          } catch {
            return false
          }
        },
        20_000,
      )
      const r = await nat.deploy(`nat-punch-${behaviour}`, 'v1')
      expect(r.stdout).toContain('settled: 1 committed, 0 not')
      const row = (await nat.machines()).find((m) => m.name === `nat-punch-${behaviour}`)
      expect(row).toMatchObject({ state: 'committed', online: true, path: 'direct' })
    })
  }

  it('agent behind symmetric NAT with punching enabled stays on the relay and still gets updates', async () => {
    const { agent, row } = await enrollDeploy(nat, 'symmetric', 'nat-sympunch', [
      '--bootstrap',
      relay.addr,
      '--observers',
      observers,
    ])
    expect(agent.connected.path).toBe('relayed')
    expect(row).toMatchObject({ state: 'committed', online: true, path: 'relayed' })
  })

  /** Waits for the agent to drop its link and bring it back, both after `t0`. */
  async function reconnected(agent: LabProcess, t0: number, boundMs: number): Promise<ProbeEvent> {
    await agent.waitFor(after('disconnected', t0), boundMs)
    return agent.waitFor(after('connected', t0), boundMs)
  }

  async function secondDeployLands(fleet: LabFleet, machine: string, path: ConnectionPath) {
    const r = await fleet.deploy(machine, 'v2')
    expect(r.stdout).toContain('settled: 1 committed, 0 not')
    timings.push(`${machine}: second deploy ${r.ms} ms`)
    const row = (await fleet.machines()).find((m) => m.name === machine)
    expect(row).toMatchObject({ state: 'committed', currentGeneration: 'v2', online: true, path })
  }

  it('an agent behind eim NAT whose NAT forgets the mapping (conntrack flush) reconnects by itself', async () => {
    const { agent, host } = await enrollDeploy(pub, 'eim', 'pub-flush')
    const t0 = Date.now()
    lab.flushConntrack(host.router!)
    const up = await reconnected(agent.proc, t0, RECONNECT_BOUND_MS)
    timings.push(`pub-flush: reconnected ${sinceMs(up, t0)} ms after the conntrack flush`)
    expect(sinceMs(up, t0)).toBeLessThan(RECONNECT_BOUND_MS)
    expect(up.path).toBe('direct')
    await secondDeployLands(pub, 'pub-flush', 'direct')
  })

  it('an agent behind symmetric NAT, relayed to the NATed coordinator, reconnects after its router restarts', async () => {
    const { agent, host } = await enrollDeploy(nat, 'symmetric', 'nat-reboot', ['--bootstrap', relay.addr])
    const t0 = Date.now()
    lab.restartRouter(host.router!)
    const up = await reconnected(agent.proc, t0, RECONNECT_BOUND_MS)
    timings.push(`nat-reboot: reconnected ${sinceMs(up, t0)} ms after the router restart`)
    expect(sinceMs(up, t0)).toBeLessThan(RECONNECT_BOUND_MS)
    expect(up.path).toBe('relayed')
    await secondDeployLands(nat, 'nat-reboot', 'relayed')
  })

  it('an agent whose token address is stale finds the NATed coordinator through the DHT', async () => {
    const host = agentHost('eim')
    const token = await nat.token('nat-dht')
    // a closed port on the relay's host: as if the coordinator had moved away
    const stale = `/ip4/${relay.addr.split('/')[2]}/tcp/4999`
    const agent = nat.startAgent(host, 'nat-dht', [
      '--token',
      token,
      '--coordinator-addr',
      stale,
      '--bootstrap',
      relay.addr,
    ])
    const found = await agent.waitFor('discovered', 30_000)
    // what the coordinator announced after reserving, pushed to the relay (identify push)
    expect(found.addrs).toContain(`${relay.addr}/p2p-circuit`)
    await agent.waitFor('enrolled', 30_000)
    const up = await agent.waitFor('connected', 30_000)
    expect(up.path).toBe('relayed')
    const r = await nat.deploy('nat-dht', 'v1')
    expect(r.stdout).toContain('settled: 1 committed, 0 not')
    // restarted (enrolled, fresh peer store) with only the stale address: the
    // control link itself looks the coordinator up
    agent.kill('SIGTERM')
    await agent.exited
    const again = nat.startAgent(host, 'nat-dht', ['--coordinator-addr', stale, '--bootstrap', relay.addr])
    await again.waitFor('discovered', 30_000)
    expect((await again.waitFor('connected', 30_000)).path).toBe('relayed')
  })

  it('the NATed coordinator re-reserves after its own NAT forgets the mapping, and its agents come back', async () => {
    const { agent } = await enrollDeploy(nat, 'eim', 'nat-cflush', ['--bootstrap', relay.addr])
    const coordinator = nat.coordinator!
    const t0 = Date.now()
    lab.flushConntrack(coordNat.router!)
    const lost = await coordinator.waitFor(
      after('reservation', t0, (e) => e.status === 'lost'),
      15_000,
    )
    const renewed = await coordinator.waitFor(
      after('reservation', t0, (e) => e.status === 'renewed'),
      30_000,
    )
    const up = await reconnected(agent.proc, t0, 60_000)
    timings.push(
      `nat-cflush: reservation lost after ${sinceMs(lost, t0)} ms, renewed after ${sinceMs(renewed, t0)} ms, ` +
        `agent back after ${sinceMs(up, t0)} ms`,
    )
    expect(up.path).toBe('relayed')
    await secondDeployLands(nat, 'nat-cflush', 'relayed')
  })
})

describe('relay reservation expiry', () => {
  it('a reservation refreshed twice lives until one TTL after the last refresh (retimeable-signal workaround)', async () => {
    const ttl = 400
    const relay = await createHost({
      role: 'relay',
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      relay: { reservationTtlMs: ttl },
    })
    const undo = repairReservationExpiry(relay)
    try {
      const service = relay.services.relay!
      // the server's own RESERVE path, minus the network
      const store = (
        service as unknown as { reservationStore: { reserve(p: PeerId, a: Multiaddr): unknown } }
      ).reservationStore
      const client = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
      const addr = multiaddr('/ip4/127.0.0.1/tcp/1')
      const t0 = Date.now()
      const at = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, t0 + ms - Date.now())))
      store.reserve(client, addr)
      await at(250)
      store.reserve(client, addr)
      await at(500)
      store.reserve(client, addr)
      // unrepaired, the first refresh's timer drops it at 250 + ttl = 650
      await at(800)
      expect(service.reservations.has(client)).toBe(true)
      await at(500 + ttl + 150)
      expect(service.reservations.has(client)).toBe(false)
    } finally {
      undo()
      await relay.stop()
    }
  })
})
