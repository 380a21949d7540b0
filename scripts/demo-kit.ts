/**
 * What the `npm run demo*` scripts share: headings and lines on stdout, echoed
 * `fleetmesh` commands run as separate processes, and the life of a temporary
 * loopback fleet (testkit/harness.ts) that ends with every process it started
 * killed and its state removed: when the demo is done, when it fails, and on
 * Ctrl-C or SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { fleetmeshArgv } from '../testkit/fleetmesh.ts'
import { type CliResult, runCli, TestFleet } from '../testkit/harness.ts'

export const step = (msg: string) => process.stdout.write(`\n\x1b[1m== ${msg}\x1b[0m\n`)
export const say = (msg: string) => process.stdout.write(`${msg}\n`)

/** Commands started by {@link exec} and still running: killed with the fleet on Ctrl-C. */
const running = new Set<ChildProcess>()

/** Runs a command with the demo's terminal; resolves with its exit code. */
export function exec(command: string, argv: string[], env?: NodeJS.ProcessEnv): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(command, argv, { stdio: 'inherit', ...(env ? { env } : {}) })
    running.add(child)
    child.on('exit', (code) => {
      running.delete(child)
      resolve(code)
    })
  })
}

/** `args` as the operator would type them: without the --home of the temporary admin. */
const shown = (args: readonly string[]) =>
  args.filter((a, i) => args[i - 1] !== '--home' && a !== '--home').join(' ')

/** `fleetmesh <args>` as a separate process on the demo's terminal, echoed first. */
export function run(args: string[]): Promise<number | null> {
  say(`$ fleetmesh ${shown(args)}`)
  return exec(process.execPath, fleetmeshArgv(args))
}

/** `fleetmesh <args>` echoed, its output collected (and printed) for the demo to read values from. */
export async function capture(args: string[]): Promise<CliResult> {
  say(`$ fleetmesh ${shown(args)}`)
  const r = await runCli(args)
  process.stdout.write(r.stdout)
  process.stderr.write(r.stderr)
  return r
}

/**
 * Creates a temporary fleet, runs `demo` on it and exits with the code it
 * returns (1 when it throws). Whatever happens, the fleet's processes are
 * killed and its state removed before the exit; `farewell` is the heading of
 * that last step.
 */
export async function runDemo(
  demo: (fleet: TestFleet) => Promise<number>,
  farewell = 'stopping processes and removing temporary state',
): Promise<never> {
  const fleet = await TestFleet.create()
  let stopping: Promise<void> | undefined
  const stop = () => {
    stopping ??= (async () => {
      step(farewell)
      for (const child of running) child.kill('SIGKILL')
      await fleet.stop()
      await rm(fleet.dir, { recursive: true, force: true })
    })()
    return stopping
  }
  let interrupted = false
  const interrupt = (signal: NodeJS.Signals) => {
    interrupted = true
    process.stderr.write(`\ndemo interrupted (${signal})\n`)
    void stop().finally(() => process.exit(130))
  }
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
  let code = 1
  try {
    code = await demo(fleet)
  } catch (err) {
    // Once interrupted, what fails is only the fleet going away under the demo.
    if (!interrupted) process.stderr.write(`demo failed: ${(err as Error).message}\n`)
  } finally {
    await stop()
  }
  process.exit(interrupted ? 130 : code)
}
