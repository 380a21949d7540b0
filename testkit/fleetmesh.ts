/**
 * Running the real `fleetmesh` command from tests, benchmarks and the demo: the
 * path of bin/fleetmesh.js and the Node arguments that start it, one run of a
 * command to completion with a timeout, the argument lists of the commands
 * every fleet needs (init, coordinator, agent, deploy), and the directory layout
 * of a test fleet. The loopback harness (harness.ts) and the NAT lab's fleets
 * (natlab/fleet-lab.ts) both start their processes through here.
 */
import { spawn } from 'node:child_process'
import { join, resolve } from 'node:path'

export const BIN = resolve(import.meta.dirname, '../bin/fleetmesh.js')

/** What follows the pinned Node (`process.execPath`) to run `fleetmesh <args>`. */
export function fleetmeshArgv(args: readonly string[]): string[] {
  return ['--disable-warning=ExperimentalWarning', BIN, ...args]
}

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
  /** Wall time of the command, ms */
  ms: number
}

/** A one-shot command that timed out, or (from callers that require success) failed. */
export class CliError extends Error {
  override name = 'CliError'
}

export interface RunOptions {
  /** Added to the test process's environment */
  env?: NodeJS.ProcessEnv
  /** Killed with SIGKILL and rejected with a CliError after this long */
  timeoutMs: number
  /** Names the command in the timeout error; defaults to the command line */
  label?: string
}

/** Runs `command argv` to completion, collecting its output; any exit code resolves. */
export function runToCompletion(
  command: string,
  argv: readonly string[],
  options: RunOptions,
): Promise<CliResult> {
  const started = Date.now()
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    })
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
      const label = options.label ?? [command, ...argv].join(' ')
      reject(
        new CliError(
          `${label} timed out after ${options.timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`,
        ),
      )
    }, options.timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    // 'close', not 'exit': the output is complete only once the pipes have ended.
    child.on('close', (code) => {
      clearTimeout(timer)
      resolveRun({ code, stdout, stderr, ms: Date.now() - started })
    })
  })
}

export interface InitOptions {
  fleet: string
  coordState: string
  /** What the fleet file records (and so what enrollment tokens carry) */
  coordinatorAddrs: readonly string[]
}

/** `init` of a new fleet, with JSON output; put `--home <dir>` before it. */
export function initArgs(init: InitOptions): string[] {
  return [
    'init',
    '--fleet',
    init.fleet,
    '--coordinator-state',
    init.coordState,
    ...init.coordinatorAddrs.flatMap((a) => ['--coordinator-addr', a]),
    '--json',
  ]
}

/** A coordinator daemon printing JSON events. */
export function coordinatorArgs(state: string, listen: string, extra: readonly string[] = []): string[] {
  return ['coordinator', '--state', state, '--listen', listen, '--json', ...extra]
}

/**
 * An agent daemon printing JSON events, pinging every second so a lost link
 * shows within seconds. No --listen: agents run as they do by default, with no
 * listening socket (nothing in a fleet dials them).
 */
export function agentArgs(state: string, extra: readonly string[] = []): string[] {
  return ['agent', '--state', state, '--json', '--keepalive', '1s', ...extra]
}

/** `deploy <archive> --to <target> --generation <generation>`; put `--home <dir>` before it. */
export function deployArgs(
  archive: string,
  target: string,
  generation: string,
  extra: readonly string[] = [],
): string[] {
  return ['deploy', archive, '--to', target, '--generation', generation, ...extra]
}

/**
 * A test fleet's temporary directory: the admin home, the coordinator's state
 * and one state directory per agent, side by side.
 */
export class FleetDirectory {
  readonly dir: string
  readonly home: string
  readonly coordState: string

  constructor(dir: string) {
    this.dir = dir
    this.home = join(dir, 'admin')
    this.coordState = join(dir, 'coordinator')
  }

  agentState(machine: string): string {
    return join(this.dir, `agent-${machine}`)
  }

  /** The agent's link to the generation it runs now. */
  currentProfile(machine: string): string {
    return join(this.agentState(machine), 'profile', 'current')
  }

  /** The coordinator's SQLite store, for tests that inspect or tamper with it. */
  get storePath(): string {
    return join(this.coordState, 'fleet.db')
  }
}
