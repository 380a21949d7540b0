/**
 * Real fleetmesh processes inside NAT lab namespaces: a relay, coordinators
 * (public or behind a router), agents behind routers, and the admin CLI on the
 * public segment. Each process is `bin/fleetmesh.js` run by the pinned Node
 * (`process.execPath`) through `ip netns exec`; daemons print JSON events that
 * tests await, one-shot commands are run to completion.
 *
 * A fleet's state directories live in one temporary directory, visible from
 * every namespace (namespaces separate networks, not filesystems). The command
 * lines are the loopback harness's (../fleetmesh.ts). Used by
 * test/natlab/traversal.test.ts and `npm run bench:nat`.
 *
 * @example
 * ```ts
 * using lab = createLab()
 * const relay = await startLabRelay(lab, lab.addPublicHost('relay'), await mkdtemp(join(tmpdir(), 'relay-')))
 * const fleet = await LabFleet.create(lab, { name: 'f', admin: lab.addPublicHost('admin'), coordinator: lab.addPublicHost('coord') })
 * await fleet.startCoordinator(['--bootstrap', relay.addr])
 * const home = lab.addRouter('home', { behaviour: 'eim' })
 * const { proc, connected } = await fleet.enrollAgent(lab.addPrivateHost('dev', home), 'dev-1')
 * await fleet.deploy('dev-1', 'v1')
 * await fleet.remove()
 * ```
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ConnectionPath } from '../../protocol/index.ts'
import { makeArchive } from '../archives.ts'
import {
  agentArgs,
  CliError,
  type CliResult,
  coordinatorArgs,
  deployArgs,
  FleetDirectory,
  fleetmeshArgv,
  initArgs,
  runToCompletion,
} from '../fleetmesh.ts'
import type { Lab, LabHost, LabNode, LabProcess, ProbeEvent } from './lab.ts'

export const PORT = 4001

/**
 * Runs `fleetmesh <args>` to completion, inside `node`'s namespace (or in the
 * test's own namespace for `null`: offline commands need no network).
 */
export function runFleetmesh(node: LabNode | null, args: string[], timeoutMs = 90_000): Promise<CliResult> {
  const argv = fleetmeshArgv(args)
  const options = { timeoutMs, label: `fleetmesh ${args.join(' ')}` }
  return node === null
    ? runToCompletion(process.execPath, argv, options)
    : runToCompletion('ip', ['netns', 'exec', node.ns, process.execPath, ...argv], options)
}

/** Starts a fleetmesh daemon in `node`'s namespace; the lab kills it on destroy. */
export function spawnFleetmesh(lab: Lab, node: LabNode, label: string, args: string[]): LabProcess {
  return lab.spawn(node, process.execPath, fleetmeshArgv(args), { label })
}

/** The first event named `name` that arrived after `since` (ms since epoch), by its own `at` stamp. */
export function after(name: string, since: number, extra: (e: ProbeEvent) => boolean = () => true) {
  return (e: ProbeEvent): boolean =>
    e.event === name && typeof e.at === 'string' && Date.parse(e.at) >= since && extra(e)
}

export interface LabRelay {
  proc: LabProcess
  peerId: string
  /** `/ip4/<public ip>/tcp/4001/p2p/<peer id>` */
  addr: string
  /** Its NAT observers (the relay's default ports 4002 and 4003), as `--observers` takes them */
  observers: string
}

export async function startLabRelay(lab: Lab, host: LabHost, dir: string): Promise<LabRelay> {
  const proc = spawnFleetmesh(lab, host, `relay@${host.name}`, [
    'relay',
    '--state',
    join(dir, `relay-${host.name}`),
    '--listen',
    `/ip4/${host.ip}/tcp/${PORT}`,
    '--json',
  ])
  const ready = await proc.waitFor('ready', 30_000)
  const peerId = String(ready.peerId)
  return {
    proc,
    peerId,
    addr: `/ip4/${host.ip}/tcp/${PORT}/p2p/${peerId}`,
    observers: `${host.ip}:4002,${host.ip}:4003`,
  }
}

export interface MachineRow {
  name: string
  state: string | null
  currentGeneration: string | null
  online: boolean
  path: ConnectionPath | null
}

export interface LabFleetInit {
  /** Fleet id and directory name */
  name: string
  /** Where the admin CLI runs */
  admin: LabHost
  /** Where the coordinator runs */
  coordinator: LabHost
  /**
   * What `init --coordinator-addr` records (and so what tokens carry).
   *
   * @default the coordinator's own address
   */
  coordinatorAddrs?: string[]
}

/** One fleet: admin home, coordinator state, agents, all in one temp directory. */
export class LabFleet extends FleetDirectory {
  readonly lab: Lab
  readonly name: string
  readonly admin: LabHost
  readonly coordinatorHost: LabHost
  coordinatorPeerId = ''
  coordinator: LabProcess | undefined
  #archives = 0

  private constructor(lab: Lab, init: LabFleetInit, dir: string) {
    super(dir)
    this.lab = lab
    this.name = init.name
    this.admin = init.admin
    this.coordinatorHost = init.coordinator
  }

  static async create(lab: Lab, init: LabFleetInit): Promise<LabFleet> {
    const dir = await mkdtemp(join(tmpdir(), `fm-lab-${init.name}-`))
    const fleet = new LabFleet(lab, init, dir)
    const addrs = init.coordinatorAddrs ?? [fleet.coordinatorListen]
    const r = await runFleetmesh(null, [
      '--home',
      fleet.home,
      ...initArgs({ fleet: init.name, coordState: fleet.coordState, coordinatorAddrs: addrs }),
    ])
    if (r.code !== 0) throw new CliError(`init failed: ${r.stderr}`)
    fleet.coordinatorPeerId = String(
      (JSON.parse(r.stdout) as { coordinator: { peerId: string } }).coordinator.peerId,
    )
    return fleet
  }

  get coordinatorListen(): string {
    return `/ip4/${this.coordinatorHost.ip}/tcp/${PORT}`
  }

  async startCoordinator(extra: string[] = []): Promise<LabProcess> {
    const proc = spawnFleetmesh(
      this.lab,
      this.coordinatorHost,
      `coordinator ${this.name}`,
      coordinatorArgs(this.coordState, this.coordinatorListen, extra),
    )
    this.coordinator = proc
    await proc.waitFor('ready', 30_000)
    return proc
  }

  /**
   * Starts a coordinator behind NAT, reachable through `relay`: reserved on it,
   * bootstrapping from it and punching through its observers (`extra` adds
   * flags); resolves once the reservation holds.
   */
  async startRelayedCoordinator(relay: LabRelay, extra: string[] = []): Promise<LabProcess> {
    const proc = await this.startCoordinator([
      '--reserve-on',
      relay.addr,
      '--bootstrap',
      relay.addr,
      '--observers',
      relay.observers,
      ...extra,
    ])
    await proc.waitFor((e) => e.event === 'reservation' && e.status === 'ok', 30_000)
    return proc
  }

  /** Runs an admin command on the admin host; rejects unless it exits 0. */
  async cli(args: string[], timeoutMs?: number): Promise<CliResult> {
    const r = await runFleetmesh(this.admin, ['--home', this.home, ...args], timeoutMs)
    if (r.code !== 0)
      throw new CliError(
        `fleetmesh ${args.join(' ')} exited ${r.code} after ${r.ms} ms\n${r.stdout}\n${r.stderr}`,
      )
    return r
  }

  async machines(): Promise<MachineRow[]> {
    return JSON.parse((await this.cli(['machines', '--json'])).stdout) as MachineRow[]
  }

  async token(machine: string): Promise<string> {
    const r = await runFleetmesh(null, ['--home', this.home, 'enroll', machine, '--json'])
    if (r.code !== 0) throw new CliError(`enroll ${machine} failed: ${r.stderr}`)
    return String((JSON.parse(r.stdout) as { token: string }).token)
  }

  /** Starts an agent on `host` with a fresh token; resolves once its control link is up. */
  async enrollAgent(
    host: LabHost,
    machine: string,
    extra: string[] = [],
  ): Promise<{ proc: LabProcess; connected: ProbeEvent }> {
    const token = await this.token(machine)
    const proc = this.startAgent(host, machine, ['--token', token, ...extra])
    const connected = await proc.waitFor('connected', 45_000)
    return { proc, connected }
  }

  startAgent(host: LabHost, machine: string, extra: string[] = []): LabProcess {
    return spawnFleetmesh(this.lab, host, `agent ${machine}`, agentArgs(this.agentState(machine), extra))
  }

  /** Builds an archive and deploys it to `target`, watching until it settles. */
  async deploy(target: string, version: string): Promise<CliResult> {
    const archive = await makeArchive(this.dir, { version: `${version}-${this.#archives++}` })
    return this.cli(
      deployArgs(archive, target, version, ['--health-check', './health', '--timeout', '60s']),
      90_000,
    )
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true })
  }
}
