/**
 * Relay loss in the NAT lab, for test/natlab/relays.test.ts and `npm run
 * bench:nat`: a coordinator behind an eim NAT reachable only through relays
 * (`--reserve-on` each, the fleet's tokens listing a circuit address on each),
 * and an agent behind a symmetric NAT (so it stays relayed) whose relay dies.
 *
 * - {@link relayFailover}: two relays, the coordinator reserved on both; the
 *   relay the agent's link goes through dies for good, a deploy is made at
 *   once, and then the agent is restarted while that relay is still dead.
 * - {@link relayRestart}: one relay, killed and started again (same identity and
 *   address) after `downMs`.
 *
 * Each returns what happened, with times from the processes' own event stamps;
 * the caller asserts and prints.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, LabFleet, type LabRelay, startLabRelay } from './fleet-lab.ts'
import type { Lab, LabHost, LabProcess, ProbeEvent } from './lab.ts'

const stamp = (e: ProbeEvent): number => Date.parse(String(e.at))

/** Whether a `connected` event's address goes through `relay`. */
export const through = (e: ProbeEvent, relay: LabRelay): boolean =>
  String(e.addr).includes(`/p2p/${relay.peerId}/p2p-circuit`)

/** What a scenario started, stopped before its directory goes (a live daemon would write into it). */
class Scene {
  readonly procs: LabProcess[] = []
  fleet: LabFleet | undefined

  add<P extends LabProcess>(proc: P): P {
    this.procs.push(proc)
    return proc
  }

  async end(dir: string): Promise<void> {
    for (const p of this.procs) p.kill('SIGKILL')
    await Promise.all(this.procs.map((p) => p.exited))
    await this.fleet?.remove()
    await rm(dir, { recursive: true, force: true })
  }
}

/** A fleet whose coordinator sits behind an eim NAT, reserved on `relays`, and one agent behind a symmetric NAT. */
async function natFleet(scene: Scene, lab: Lab, name: string, admin: LabHost, relays: LabRelay[]) {
  const fleet = await LabFleet.create(lab, {
    name,
    admin,
    coordinator: lab.addPrivateHost(`${name}c`, lab.addRouter(`${name}cr`, { behaviour: 'eim' })),
    coordinatorAddrs: relays.map((r) => `${r.addr}/p2p-circuit`),
  })
  scene.fleet = fleet
  const coordinator = scene.add(
    await fleet.startCoordinator([
      ...relays.flatMap((r) => ['--reserve-on', r.addr, '--bootstrap', r.addr]),
      '--reserve-keepalive',
      '1s',
    ]),
  )
  await Promise.all(
    relays.map((r) =>
      coordinator.waitFor(
        (e) => e.event === 'reservation' && e.status === 'ok' && e.relay === r.addr,
        30_000,
      ),
    ),
  )
  const agentHost = lab.addPrivateHost(`${name}a`, lab.addRouter(`${name}ar`, { behaviour: 'symmetric' }))
  const agentExtra = relays.flatMap((r) => ['--bootstrap', r.addr])
  const machine = `${name}-agent`
  const agent = await fleet.enrollAgent(agentHost, machine, agentExtra)
  scene.add(agent.proc)
  return { fleet, coordinator, agent: agent.proc, agentHost, agentExtra, connected: agent.connected, machine }
}

/**
 * How the relay dies: `kill` (SIGKILL: its kernel still resets every
 * connection, so peers notice at once) or `vanish` (its host drops off the
 * network: nothing answers, peers notice only by their keepalives).
 */
export type RelayDeath = 'kill' | 'vanish'

export interface FailoverResult {
  /** The agent's link after the relay died, and when it came up (ms after the death) */
  relinked: ProbeEvent
  relinkedMs: number
  /** Whether the agent's link went down at all */
  dropped: boolean
  /** The deploy made right after the death settled with the agent committed */
  deployCommitted: boolean
  deployMs: number
  /** `reservation` events other than ok/renewed on the surviving relay after the death (should be none) */
  survivorLost: ProbeEvent[]
  /** The agent restarted while the relay is still dead: its first link, and how long after `ready` */
  restartLink: ProbeEvent
  restartConnectMs: number
}

/**
 * Two relays, coordinator reserved on both, agent relayed through one of them;
 * that relay dies and a deploy is made at once.
 */
export async function relayFailover(lab: Lab, death: RelayDeath, boundMs = 60_000): Promise<FailoverResult> {
  const dir = await mkdtemp(join(tmpdir(), 'fm-lab-relays-'))
  const scene = new Scene()
  try {
    const admin = lab.addPublicHost(`${death}admin`)
    const hosts = [lab.addPublicHost(`${death}ra`), lab.addPublicHost(`${death}rb`)]
    const relays: LabRelay[] = []
    for (const host of hosts) relays.push(await startLabRelay(lab, host, dir))
    for (const r of relays) scene.add(r.proc)
    const setup = await natFleet(scene, lab, death.slice(0, 2), admin, relays)
    const first = through(setup.connected, relays[0]!) ? 0 : 1
    const survivor = relays[1 - first]!
    const t0 = Date.now()
    if (death === 'kill') relays[first]!.proc.kill('SIGKILL')
    else lab.exec(hosts[first]!, 'ip', ['link', 'set', 'eth0', 'down'])
    const deploy = setup.fleet.deploy(setup.machine, 'v1').then(
      (r) => ({ ok: r.stdout.includes('settled: 1 committed, 0 not'), ms: r.ms }),
      () => ({ ok: false, ms: Date.now() - t0 }),
    )
    const relinked = await setup.agent.waitFor(
      after('connected', t0, (e) => through(e, survivor) || e.path === 'direct'),
      boundMs,
    )
    const d = await deploy
    // restarted, the agent knows only the token's addresses, the dead relay's among them
    setup.agent.kill('SIGTERM')
    await setup.agent.exited
    const again = scene.add(setup.fleet.startAgent(setup.agentHost, setup.machine, setup.agentExtra))
    const ready = await again.waitFor('ready', boundMs)
    const restartLink = await again.waitFor('connected', boundMs)
    return {
      relinked,
      relinkedMs: stamp(relinked) - t0,
      dropped: setup.agent.events.some(after('disconnected', t0)),
      deployCommitted: d.ok,
      deployMs: d.ms,
      survivorLost: setup.coordinator.events.filter(
        after(
          'reservation',
          t0,
          (e) => e.relay === survivor.addr && !['ok', 'renewed'].includes(String(e.status)),
        ),
      ),
      restartLink,
      restartConnectMs: stamp(restartLink) - stamp(ready),
    }
  } finally {
    await scene.end(dir)
  }
}

export interface RestartResult {
  /** The relay's new process printed `ready` this long after it was started */
  relayStartMs: number
  /** From the relay's `ready` to the coordinator's reservation on it */
  reservedMs: number
  /** From the relay's `ready` to the agent's `connected` */
  reconnectedMs: number
  reconnected: ProbeEvent
  /** How long the relay was away: from its death to its new process's `ready` */
  downMs: number
  /** The agent's failed tries to reach the coordinator while the relay was away */
  agentRetries: number
  /** The coordinator's failed tries to reserve on the relay while it was away */
  reserveRetries: number
}

/** One relay, killed and started again `downMs` later on the same address with the same identity. */
export async function relayRestart(lab: Lab, downMs = 10_000, boundMs = 60_000): Promise<RestartResult> {
  const dir = await mkdtemp(join(tmpdir(), 'fm-lab-relay1-'))
  const scene = new Scene()
  try {
    const admin = lab.addPublicHost('radmin')
    const relayHost = lab.addPublicHost('rrelay')
    const relay = await startLabRelay(lab, relayHost, dir)
    scene.add(relay.proc)
    const setup = await natFleet(scene, lab, 'rs', admin, [relay])
    const t0 = Date.now()
    relay.proc.kill('SIGKILL')
    await setup.agent.waitFor(after('disconnected', t0), boundMs)
    // the outage the issue measured: the relay back 10 s after it died
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, t0 + downMs - Date.now())))
    const tStart = Date.now()
    const again = await startLabRelay(lab, relayHost, dir)
    scene.add(again.proc)
    if (again.peerId !== relay.peerId) throw new Error('the restarted relay has another identity')
    const ready = again.proc.events.find((e) => e.event === 'ready')
    const tReady = ready === undefined ? Date.now() : stamp(ready)
    const reserved = await setup.coordinator.waitFor(
      after('reservation', tReady, (e) => e.status === 'renewed' || e.status === 'ok'),
      boundMs,
    )
    const reconnected = await setup.agent.waitFor(after('connected', t0), boundMs)
    return {
      relayStartMs: tReady - tStart,
      reservedMs: stamp(reserved) - tReady,
      reconnectedMs: stamp(reconnected) - tReady,
      reconnected,
      downMs: tReady - t0,
      agentRetries: setup.agent.events.filter(
        (e) => after('disconnected', t0)(e) && e.error !== undefined && stamp(e) < tReady,
      ).length,
      reserveRetries: setup.coordinator.events.filter(
        (e) => after('reservation', t0)(e) && e.status === 'failed' && stamp(e) < tReady,
      ).length,
    }
  } finally {
    await scene.end(dir)
  }
}
