/**
 * Commands for the NAT lab: running `ip`, `iptables`, `conntrack` and `sysctl`
 * (in the test's namespace or inside a lab namespace) with failures that name
 * the command, and the life cycle of the lab's namespaces, including removing
 * those a killed run left behind. Used by lab.ts and nat-rules.ts.
 */
import { execFileSync } from 'node:child_process'

/** Every lab namespace is named `fm-<pid>-…`, so a dead run's leftovers can be told apart. */
const NS_RE = /^fm-(\d+)-/

/** A lab command failed; `stderr` says why. */
export class LabCommandError extends Error {
  override readonly name = 'LabCommandError'
  readonly command: string
  readonly stderr: string

  constructor(command: string, stderr: string, cause: unknown) {
    super(`NAT lab command failed: ${command}\n${stderr.trim()}`, { cause })
    this.command = command
    this.stderr = stderr
  }
}

function errorStderr(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'stderr' in err) {
    const s = (err as { stderr: unknown }).stderr
    if (typeof s === 'string') return s
    if (Buffer.isBuffer(s)) return s.toString('utf8')
  }
  return err instanceof Error ? err.message : String(err)
}

/** Runs a command to completion (20 s at most) and returns its stdout; throws {@link LabCommandError}. */
export function run(command: string, args: readonly string[], input?: string): string {
  try {
    return execFileSync(command, args, {
      input,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 20_000,
    })
  } catch (err) {
    throw new LabCommandError([command, ...args].join(' '), errorStderr(err), err)
  }
}

/** Whether the command succeeds; its output and error are dropped. */
export function runQuiet(command: string, args: readonly string[]): boolean {
  try {
    run(command, args)
    return true
  } catch {
    return false
  }
}

/** {@link run} inside namespace `ns`. */
export function nsExec(ns: string, command: string, args: readonly string[], input?: string): string {
  return run('ip', ['netns', 'exec', ns, command, ...args], input)
}

/** Names of every network namespace on this machine, the lab's and others'. */
export function listNamespaces(): string[] {
  return run('ip', ['netns', 'list'])
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '')
}

/** Kill every process still inside `ns`, then remove it. Never throws. */
export function removeNamespace(ns: string): void {
  try {
    const pids = run('ip', ['netns', 'pids', ns])
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((pid) => Number.isInteger(pid) && pid > 0)
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  } catch {
    // namespace already gone
  }
  runQuiet('ip', ['netns', 'del', ns])
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Remove `fm-<pid>-…` namespaces whose pid is no longer running (left by a run
 * that was SIGKILLed), with any processes still in them; their veths go with
 * them since both ends of every lab veth live in lab namespaces.
 * Returns the names removed.
 */
export function cleanupStale(): string[] {
  const removed: string[] = []
  let names: string[]
  try {
    names = listNamespaces()
  } catch {
    return removed
  }
  for (const ns of names) {
    const match = NS_RE.exec(ns)
    if (match === null) continue
    const pid = Number(match[1])
    if (pid === process.pid || pidAlive(pid)) continue
    removeNamespace(ns)
    removed.push(ns)
  }
  return removed
}
