/**
 * Real fleetmesh processes inside NAT lab namespaces: a relay, coordinators
 * (public or behind a router), agents behind routers, and the admin CLI on the
 * public segment. Each process is `bin/fleetmesh.js` run by the pinned Node
 * (`process.execPath`) through `ip netns exec`; daemons print JSON events that
 * tests await, one-shot commands are run to completion.
 *
 * A fleet's state directories live in one temporary directory, visible from
 * every namespace (namespaces separate networks, not filesystems).
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
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { ConnectionPath } from '../../protocol/index.ts'
import { makeArchive } from '../archives.ts'
import type { Lab, LabHost, LabNode, LabProcess, ProbeEvent } from './lab.ts'

export const BIN = resolve(import.meta.dirname, '../../bin/fleetmesh.js')
const NODE_ARGS = ['--disable-warning=ExperimentalWarning', BIN]
export const PORT = 4001

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
  /** Wall time of the command, ms */
  ms: number
}

export class CliError extends Error {
  override name = 'CliError'
}

/**
 * Runs `fleetmesh <args>` to completion, inside `node`'s namespace (or in the
 * test's own namespace for `null`: offline commands need no network).
 */
export function runFleetmesh(node: LabNode | null, args: string[], timeoutMs = 90_000): Promise<CliResult> {
  const [command, argv] =
    node === null
      ? [process.execPath, [...NODE_ARGS, ...args]]
      : ['ip', ['netns', 'exec', node.ns, process.execPath, ...NODE_ARGS, ...args]]
  const started = Date.now()
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(
        new CliError(`fleetmesh ${args.join(' ')} timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`),
      )
    }, timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolveRun({ code, stdout, stderr, ms: Date.now() - started })
    })
  })
}

/** Starts a fleetmesh daemon in `node`'s namespace; the lab kills it on destroy. */
export function spawnFleetmesh(lab: Lab, node: LabNode, label: string, args: string[]): LabProcess {
  return lab.spawn(node, process.execPath, [...NODE_ARGS, ...args], { label })
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
  return { proc, peerId, addr: `/ip4/${host.ip}/tcp/${PORT}/p2p/${peerId}` }
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
export class LabFleet {
  readonly lab: Lab
  readonly name: string
  readonly dir: string
  readonly home: string
  readonly coordState: string
  readonly admin: LabHost
  readonly coordinatorHost: LabHost
  coordinatorPeerId = ''
  coordinator: LabProcess | undefined
  #archives = 0

  private constructor(lab: Lab, init: LabFleetInit, dir: string) {
    this.lab = lab
    this.name = init.name
    this.dir = dir
    this.home = join(dir, 'admin')
    this.coordState = join(dir, 'coordinator')
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
      'init',
      '--fleet',
      init.name,
      '--coordinator-state',
      fleet.coordState,
      ...addrs.flatMap((a) => ['--coordinator-addr', a]),
      '--json',
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
    const proc = spawnFleetmesh(this.lab, this.coordinatorHost, `coordinator ${this.name}`, [
      'coordinator',
      '--state',
      this.coordState,
      '--listen',
      this.coordinatorListen,
      '--json',
      ...extra,
    ])
    this.coordinator = proc
    await proc.waitFor('ready', 30_000)
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

  agentState(machine: string): string {
    return join(this.dir, `agent-${machine}`)
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
    return spawnFleetmesh(this.lab, host, `agent ${machine}`, [
      'agent',
      '--state',
      this.agentState(machine),
      '--json',
      '--keepalive',
      '1s',
      '--listen',
      `/ip4/${host.ip}/tcp/0`,
      ...extra,
    ])
  }

  /** Builds an archive and deploys it to `target`, watching until it settles. */
  async deploy(target: string, version: string): Promise<CliResult> {
    const archive = await makeArchive(this.dir, { version: `${version}-${this.#archives++}` })
    return this.cli(
      [
        'deploy',
        archive,
        '--to',
        target,
        '--generation',
        version,
        '--health-check',
        './health',
        '--timeout',
        '60s',
      ],
      90_000,
    )
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true })
  }
}
