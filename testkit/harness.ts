/**
 * Real-process test harness: runs `bin/fleetmesh.js` as separate processes on
 * loopback with temporary state, reads their JSON event lines, and cleans up.
 * Synchronisation is by awaiting events the processes print, never by sleeping.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'

export const BIN = resolve(import.meta.dirname, '../bin/fleetmesh.js')

export type Event = Record<string, unknown> & { event?: string }

export class Proc {
  readonly child: ChildProcess
  readonly name: string
  readonly events: Event[] = []
  readonly stderr: string[] = []
  readonly exited: Promise<number | null>
  readonly #waiters = new Set<() => void>()

  constructor(name: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    this.name = name
    this.child = spawn(process.execPath, [BIN, ...args], {
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
    return new Promise((resolveWait, reject) => {
      const check = (): boolean => {
        const found = this.events.find(pred)
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

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`fleetmesh ${args.join(' ')} timed out\nstdout:${stdout}\nstderr:${stderr}`))
    }, timeoutMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolveRun({ code, stdout, stderr })
    })
  })
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => resolvePort(typeof addr === 'object' && addr !== null ? addr.port : 0))
    })
  })
}

/** A fleet on loopback: admin home, coordinator state dir, agents' state dirs. */
export class TestFleet {
  readonly dir: string
  readonly home: string
  readonly coordState: string
  readonly port: number
  readonly procs: Proc[] = []
  coordinator: Proc | undefined

  private constructor(dir: string, port: number) {
    this.dir = dir
    this.home = join(dir, 'admin')
    this.coordState = join(dir, 'coordinator')
    this.port = port
  }

  static async create(): Promise<TestFleet> {
    const fleet = new TestFleet(await mkdtemp(join(tmpdir(), 'fm-it-')), await freePort())
    const r = await fleet.cli([
      'init',
      '--fleet',
      'test',
      '--coordinator-state',
      fleet.coordState,
      '--coordinator-addr',
      `/ip4/127.0.0.1/tcp/${fleet.port}`,
      '--json',
    ])
    if (r.code !== 0) throw new Error(`init failed: ${r.stderr}`)
    return fleet
  }

  cli(args: string[], timeoutMs?: number): Promise<CliResult> {
    return runCli(['--home', this.home, ...args], {}, timeoutMs)
  }

  async json<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json'])
    if (r.code !== 0) throw new Error(`fleetmesh ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    return JSON.parse(r.stdout) as T
  }

  async startCoordinator(extra: string[] = []): Promise<Proc> {
    const p = new Proc('coordinator', [
      'coordinator',
      '--state',
      this.coordState,
      '--listen',
      `/ip4/127.0.0.1/tcp/${this.port}`,
      '--json',
      ...extra,
    ])
    this.procs.push(p)
    this.coordinator = p
    await p.waitFor((e) => e.event === 'ready', 30_000, 'coordinator ready')
    return p
  }

  async token(machine: string, tags: string[] = []): Promise<string> {
    const out = await this.json<{ token: string }>(['enroll', machine, ...tags.flatMap((t) => ['--tag', t])])
    return out.token
  }

  agentState(machine: string): string {
    return join(this.dir, `agent-${machine}`)
  }

  startAgent(machine: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Proc {
    const p = new Proc(
      `agent ${machine}`,
      [
        'agent',
        '--state',
        this.agentState(machine),
        '--json',
        '--keepalive',
        '1s',
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--pass-env',
        'FM_TEST_LOG',
        ...args,
      ],
      env,
    )
    this.procs.push(p)
    return p
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
  const { watch } = await import('node:fs')
  const { readFile: read } = await import('node:fs/promises')
  const { dirname } = await import('node:path')
  const check = async () => {
    try {
      const text = await read(path, 'utf8')
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
