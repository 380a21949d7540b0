/**
 * Running a command as a child process with bounded output and a deadline:
 * argv without a shell, in its own process group, so a timeout or an abort
 * kills everything the command started and not just its first process (a hung
 * `curl` under a shell script would otherwise outlive the check). Health
 * checks, activation hooks and every Nix call go through here.
 */
import { spawn } from 'node:child_process'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'

const DEFAULT_MAX_OUTPUT = 4096
/** After the main process exits, how long to wait for its stdout/stderr to drain. */
const DRAIN_MS = 500

export interface RunOptions {
  cwd: string
  env?: NodeJS.ProcessEnv
  timeoutMs: number
  signal?: AbortSignal
  /** Keep at most this many bytes of combined output (the end, where the error usually is). */
  maxOutputBytes?: number
  /**
   * Kill whatever is left in the process group once the command exits. Right for
   * health checks, which must not leave anything behind; wrong for activation
   * hooks, which may legitimately start a service in the background.
   */
  killGroupOnExit?: boolean
  /**
   * Takes stdout away from `output` (which then holds the tail of stderr only):
   * for commands whose stdout is data (JSON, a NAR) that warnings on stderr must
   * not corrupt. The consumer reads the stream; if it fails, the command is
   * killed and the result says so in `consumerError`.
   */
  stdout?: (stream: Readable) => Promise<void>
  /**
   * Sees the output that goes into `output` as it arrives, as text (each stream
   * decoded on its own, so a character split across chunks arrives whole), e.g.
   * to show it live while the command runs.
   */
  onOutput?: (text: string) => void
}

export interface RunResult {
  /** Exit code, or null when the process was killed or could not start. */
  code: number | null
  signal: NodeJS.Signals | null
  timedOut: boolean
  /** Set when the command could not be started at all (not found, not executable). */
  spawnError: string | null
  /** The tail of stdout and stderr, interleaved as they arrived (stderr only with a stdout consumer). */
  output: string
  /** Why the stdout consumer failed, when it did. */
  consumerError: string | null
  durationMs: number
}

/** The environment hooks and checks run with: the agent's PATH, HOME and LANG (or defaults), then `vars`. */
export function commandEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: process.env.HOME ?? '/',
    LANG: process.env.LANG ?? 'C.UTF-8',
    ...vars,
  }
}

export function describeResult(argv: readonly string[], result: RunResult): string {
  const what = `"${argv.join(' ')}"`
  let how: string
  if (result.spawnError !== null) how = `could not be started: ${result.spawnError}`
  else if (result.timedOut) how = `timed out after ${result.durationMs} ms and was killed`
  else if (result.consumerError !== null)
    how = `was stopped: reading its output failed: ${result.consumerError}`
  else if (result.signal !== null) how = `was killed by ${result.signal}`
  else how = `exited with status ${result.code}`
  const output = result.output.trim()
  return output.length > 0 ? `${what} ${how}; output: ${output}` : `${what} ${how}`
}

/**
 * Whether process `pid` exists. EPERM means it does, owned by someone else: a
 * root daemon seen by an operator's own account is running, not gone.
 */
export function isProcessRunning(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    // ESRCH: the group is already gone.
  }
}

export function runProcess(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  const [command, ...args] = argv
  if (command === undefined) throw new TypeError('runProcess needs a non-empty argv')
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT
  const started = Date.now()
  return new Promise<RunResult>((resolve) => {
    let output = Buffer.alloc(0)
    let timedOut = false
    let spawnError: string | null = null
    let consumerError: string | null = null
    let settled = false
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    const collector = () => {
      const decoder = options.onOutput === undefined ? undefined : new StringDecoder('utf8')
      return (chunk: Buffer) => {
        output = Buffer.concat([output, chunk])
        if (output.byteLength > maxOutput) output = output.subarray(output.byteLength - maxOutput)
        const text = decoder?.write(chunk)
        if (text) options.onOutput?.(text)
      }
    }
    const consumer = options.stdout
    const consumed =
      consumer === undefined
        ? undefined
        : consumer(child.stdout).catch((err: unknown) => {
            consumerError = err instanceof Error ? err.message : String(err)
            killGroup(child.pid)
          })
    if (consumed === undefined) child.stdout?.on('data', collector())
    child.stderr?.on('data', collector())

    const timer = setTimeout(() => {
      timedOut = true
      killGroup(child.pid)
    }, options.timeoutMs)
    const onAbort = () => killGroup(child.pid)
    if (options.signal?.aborted) onAbort()
    else options.signal?.addEventListener('abort', onAbort, { once: true })

    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      if (options.killGroupOnExit === true || timedOut) killGroup(child.pid)
      const done = () => {
        child.stdout?.destroy()
        child.stderr?.destroy()
        resolve({
          code,
          signal,
          timedOut,
          spawnError,
          output: output.toString('utf8'),
          consumerError,
          durationMs: Date.now() - started,
        })
      }
      if (spawnError !== null) return done()
      // A consumer finishes when stdout ends: it may still be writing what it read.
      if (consumed !== undefined) return void consumed.then(done)
      // A background process that inherited the pipes would keep them open forever.
      const drain = setTimeout(done, DRAIN_MS)
      child.once('close', () => {
        clearTimeout(drain)
        done()
      })
    }
    child.once('error', (err) => {
      spawnError = err.message
      finish(null, null)
    })
    child.once('exit', finish)
  })
}
