/**
 * Real-process test harness: runs `bin/fleetmesh.js` as separate processes on
 * loopback with temporary state, reads their JSON event lines, and cleans up.
 * Synchronisation is by awaiting events the processes print, never by sleeping.
 *
 * Used by the integration and coordinator protocol tests, by `npm run bench`
 * (fleet section) and by `npm run demo`. The NAT lab has its own fleet
 * (natlab/fleet-lab.ts) that runs the same commands inside namespaces.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { createSocket } from 'node:dgram'
import { watch } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { type MachineView, machineViewSchema } from '../protocol/index.ts'
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
} from './fleetmesh.ts'
import { nixEnv } from './nix/index.ts'

export type { CliResult } from './fleetmesh.ts'

/** One JSON line a process printed (a line that is not JSON becomes `{ event: 'text', text }`). */
export type Event = Record<string, unknown> & { event?: string }

/**
 * A fleetmesh process on loopback. {@link Proc.waitFor} looks at every event
 * the process printed, before or after the call, without using it up (the NAT
 * lab's LabProcess, by contrast, hands each event to one waiter).
 */
export class Proc {
  readonly child: ChildProcess
  readonly name: string
  readonly events: Event[] = []
  readonly stderr: string[] = []
  readonly exited: Promise<number | null>
  readonly #waiters = new Set<() => void>()

  /** `bin`: an installed `fleetmesh` to run instead of bin/fleetmesh.js on the pinned Node. */
  constructor(name: string, args: string[], env: NodeJS.ProcessEnv = {}, bin?: string) {
    this.name = name
    this.child = spawn(bin ?? process.execPath, bin === undefined ? fleetmeshArgv(args) : args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as Event)
      } catch {
        this.events.push({ event: 'text', text: line })
      }
      for (const w of this.#waiters) w()
    })
    createInterface({ input: this.child.stderr! }).on('line', (line) => {
      this.stderr.push(line)
      for (const w of this.#waiters) w()
    })
    this.exited = new Promise((resolveExit) =>
      this.child.on('exit', (code) => {
        resolveExit(code)
        for (const w of this.#waiters) w()
      }),
    )
  }

  /** Resolves with the first event (past or future) matching `pred`. */
  waitFor(pred: (e: Event) => boolean, timeoutMs = 30_000, what = 'event'): Promise<Event> {
    return this.#waitUntil(() => this.events.find(pred), timeoutMs, what)
  }

  /** Resolves with the first line of stderr (past or future) that contains `part`. */
  waitForStderr(part: string, timeoutMs = 30_000, what = part): Promise<string> {
    return this.#waitUntil(() => this.stderr.find((line) => line.includes(part)), timeoutMs, what)
  }

  #waitUntil<T>(find: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolveWait, reject) => {
      const check = (): boolean => {
        const found = find()
        if (found !== undefined) {
          cleanup()
          resolveWait(found)
          return true
        }
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          cleanup()
          reject(
            new Error(
              `${this.name} exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}\nstderr:\n${this.stderr.slice(-20).join('\n')}\nevents:\n${this.events
                .slice(-10)
                .map((e) => JSON.stringify(e))
                .join('\n')}`,
            ),
          )
          return true
        }
        return false
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(
          new Error(
            `${this.name}: timed out after ${timeoutMs} ms waiting for ${what}\nstderr:\n${this.stderr.slice(-20).join('\n')}\nevents:\n${this.events
              .slice(-15)
              .map((e) => JSON.stringify(e))
              .join('\n')}`,
          ),
        )
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.#waiters.delete(onChange)
      }
      const onChange = () => void check()
      if (!check()) this.#waiters.add(onChange)
    })
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal)
    return this.exited
  }
}

/** Runs `fleetmesh <args>` on loopback to completion; any exit code resolves. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<CliResult> {
  return runToCompletion(process.execPath, fleetmeshArgv(args), {
    env,
    timeoutMs,
    label: `fleetmesh ${args.join(' ')}`,
  })
}

/**
 * Until the coordinator acknowledged every report `agent` made so far. An
 * agent restarted before that resends its queued reports instead of making a
 * fresh first report, so a test that restarts one and waits for that first
 * report must wait for this first. Acks are cumulative (one per commit batch).
 */
export async function reportsAcked(agent: Proc, timeoutMs = 30_000): Promise<void> {
  const seqs = agent.events.filter((e) => e.event === 'status').map((e) => Number(e.seq))
  if (seqs.length === 0) return
  const last = Math.max(...seqs)
  await agent.waitFor((e) => e.event === 'acked' && Number(e.seq) >= last, timeoutMs, `report ${last} acked`)
}

/**
 * Ports tests hand to daemons come from below the kernel's ephemeral range
 * (32768-60999 on Linux): a daemon binds both TCP and UDP (QUIC) on its
 * port, and a port taken from the ephemeral range could be grabbed, between
 * this check and the daemon's bind, by any socket bound to port 0 (every
 * outgoing QUIC dial binds one), which made a coordinator fail to start with
 * "Address already in use" in CI.
 */
const TEST_PORTS = { from: 20_000, to: 32_000 }

/** A loopback port free for both TCP and UDP, outside the ephemeral range. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = TEST_PORTS.from + randomInt(TEST_PORTS.to - TEST_PORTS.from)
    if ((await tcpPortFree(port)) && (await udpPortFree(port))) return port
  }
  throw new Error(
    `no loopback port in ${TEST_PORTS.from}-${TEST_PORTS.to} free for both TCP and UDP after 50 tries`,
  )
}

function tcpPortFree(port: number): Promise<boolean> {
  return new Promise((resolveFree) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', () => resolveFree(false))
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolveFree(true)))
  })
}

function udpPortFree(port: number): Promise<boolean> {
  return new Promise((resolveFree) => {
    const socket = createSocket('udp4')
    socket.unref()
    socket.once('error', () => resolveFree(false))
    socket.bind(port, '127.0.0.1', () => socket.close(() => resolveFree(true)))
  })
}

/** A fleet on loopback: admin home, coordinator state dir, agents' state dirs. */
export class TestFleet extends FleetDirectory {
  readonly port: number
  readonly procs: Proc[] = []
  coordinator: Proc | undefined

  private constructor(dir: string, port: number) {
    super(dir)
    this.port = port
  }

  static async create(): Promise<TestFleet> {
    const fleet = new TestFleet(await mkdtemp(join(tmpdir(), 'fm-it-')), await freePort())
    const r = await fleet.cli(
      initArgs({
        fleet: 'test',
        coordState: fleet.coordState,
        coordinatorAddrs: [`/ip4/127.0.0.1/tcp/${fleet.port}`],
      }),
    )
    if (r.code !== 0) throw new CliError(`init failed: ${r.stderr}`)
    return fleet
  }

  /** Runs an admin command with this fleet's home; any exit code resolves. */
  cli(args: string[], timeoutMs?: number): Promise<CliResult> {
    return runCli(['--home', this.home, ...args], {}, timeoutMs)
  }

  /** Runs an admin command with `--json` and parses its output; rejects unless it exits 0. */
  async json<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json'])
    if (r.code !== 0) throw new CliError(`fleetmesh ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    return JSON.parse(r.stdout) as T
  }

  /** `fleetmesh machines --json`, checked against the protocol's schema for a machine view. */
  async machines(): Promise<MachineView[]> {
    return machineViewSchema.array().parse(await this.json<unknown>(['machines']))
  }

  /** `deploy <archive> --to <target> --generation <generation> [extra]` as this fleet's admin. */
  deploy(archive: string, target: string, generation: string, extra: string[] = []): Promise<CliResult> {
    return this.cli(deployArgs(archive, target, generation, extra))
  }

  async startCoordinator(extra: string[] = []): Promise<Proc> {
    const p = new Proc(
      'coordinator',
      coordinatorArgs(this.coordState, `/ip4/127.0.0.1/tcp/${this.port}`, extra),
    )
    this.procs.push(p)
    this.coordinator = p
    await p.waitFor((e) => e.event === 'ready', 30_000, 'coordinator ready')
    return p
  }

  async token(machine: string, tags: string[] = []): Promise<string> {
    const out = await this.json<{ token: string }>(['enroll', machine, ...tags.flatMap((t) => ['--tag', t])])
    return out.token
  }

  /** Where an agent started with {@link activationEnv} appends what its activate hooks write. */
  activationLog(machine: string): string {
    return join(this.dir, `${machine}.activations.log`)
  }

  /** The environment that lets archives' activate hooks log to {@link activationLog} (`$FM_TEST_LOG`). */
  activationEnv(machine: string): NodeJS.ProcessEnv {
    return { FM_TEST_LOG: this.activationLog(machine) }
  }

  /** Starts an agent; `$FM_TEST_LOG` from `env` is passed on to the hooks it runs. */
  startAgent(machine: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Proc {
    const p = new Proc(
      `agent ${machine}`,
      agentArgs(this.agentState(machine), ['--pass-env', 'FM_TEST_LOG', ...args]),
      env,
    )
    this.procs.push(p)
    return p
  }

  /** The Nix profile a NixOS agent of this fleet switches (never the machine's system profile). */
  nixProfile(machine: string): string {
    return join(this.dir, 'profiles', machine, 'system')
  }

  /** Where the fake systems' switch-to-configuration records its calls for `machine`. */
  switchLog(machine: string): string {
    return join(this.dir, `${machine}.switch.log`)
  }

  /**
   * Starts a NixOS agent (`--activator nixos`, its own profile, the test Nix
   * settings) that passes the fake switch's log and gate variables on; with
   * `token` it enrolls first. `env` is merged over the defaults.
   */
  async startNixosAgent(machine: string, token?: string, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    await mkdir(join(this.dir, 'profiles', machine), { recursive: true })
    const args = ['--activator', 'nixos', '--nix-profile', this.nixProfile(machine)]
    for (const name of ['FLEETMESH_FAKE_SWITCH_LOG', 'FLEETMESH_FAKE_SWITCH_GATE'])
      args.push('--pass-env', name)
    if (token !== undefined) args.push('--token', token)
    const vars = {
      FLEETMESH_FAKE_SWITCH_LOG: this.switchLog(machine),
      FLEETMESH_FAKE_SWITCH_GATE: '',
      ...env,
    }
    return this.startAgent(machine, args, nixEnv(vars))
  }

  /** Starts an agent with a fresh token; resolves once its control link is up. */
  async enrollAgent(machine: string, tags: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    const token = await this.token(machine, tags)
    const agent = this.startAgent(machine, ['--token', token], env)
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${machine} connected`)
    return agent
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.kill('SIGKILL')))
    await rm(this.dir, { recursive: true, force: true })
  }
}

/** Resolves once `path` exists and its text satisfies `pred` (watching its directory, no fixed sleeps). */
export async function waitForFile(
  path: string,
  pred: (text: string) => boolean,
  timeoutMs = 30_000,
): Promise<string> {
  const check = async () => {
    try {
      const text = await readFile(path, 'utf8')
      return pred(text) ? text : undefined
    } catch {
      return undefined
    }
  }
  const first = await check()
  if (first !== undefined) return first
  return new Promise((resolveFile, reject) => {
    const watcher = watch(dirname(path), () => {
      void check().then((t) => {
        if (t !== undefined) {
          clearTimeout(timer)
          watcher.close()
          resolveFile(t)
        }
      })
    })
    const timer = setTimeout(() => {
      watcher.close()
      reject(new Error(`timed out waiting for ${path}`))
    }, timeoutMs)
  })
}
