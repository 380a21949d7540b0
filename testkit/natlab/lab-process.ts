/**
 * A process running in a lab namespace, read as JSON event lines: what tests
 * and bench:nat await from probes and fleetmesh daemons. Lab.spawn creates
 * them; the probe helpers (probe-commands.ts, probe/sock-client.ts) drive them.
 */
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

export interface ProbeEvent {
  readonly event: string
  readonly [key: string]: unknown
}

export interface ProcessExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export class ProbeTimeoutError extends Error {
  override readonly name = 'ProbeTimeoutError'
}

export class ProbeExitedError extends Error {
  override readonly name = 'ProbeExitedError'
}

type Matcher = string | ((event: ProbeEvent) => boolean)

interface Waiter {
  matches: (event: ProbeEvent) => boolean
  resolve: (event: ProbeEvent) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

function toPredicate(match: Matcher): (event: ProbeEvent) => boolean {
  return typeof match === 'string' ? (event) => event.event === match : match
}

function isProbeEvent(value: unknown): value is ProbeEvent {
  return (
    typeof value === 'object' &&
    value !== null &&
    'event' in value &&
    typeof (value as { event: unknown }).event === 'string'
  )
}

/**
 * A process running in a lab namespace. Each stdout line that is a JSON object
 * with an `event` string is an event; {@link waitFor} takes the first one not yet
 * taken that matches, whether it arrived before or after the call.
 */
export class LabProcess {
  readonly child: ChildProcess
  readonly label: string
  readonly exited: Promise<ProcessExit>
  /** Every event received, in order (taken or not). */
  readonly events: ProbeEvent[] = []
  readonly #pending: ProbeEvent[] = []
  readonly #waiters: Waiter[] = []
  #stderr = ''
  #exit: ProcessExit | null = null

  constructor(child: ChildProcess, label: string) {
    this.child = child
    this.label = label
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-8_192)
    })
    // Writing to a probe that died must not crash the test process.
    child.stdin?.on('error', () => {})
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', (line) => this.#onLine(line))
    }
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.#exit = { code, signal }
        for (const waiter of this.#waiters.splice(0)) {
          clearTimeout(waiter.timer)
          waiter.reject(this.#exitedError())
        }
        resolve({ code, signal })
      })
      child.once('error', (err) => {
        this.#stderr += `\nspawn error: ${err.message}`
      })
    })
  }

  get stderr(): string {
    return this.#stderr
  }

  /**
   * Resolve with the first untaken event matching `match` (an event name or a
   * predicate). Rejects with {@link ProbeTimeoutError} after `timeoutMs`, or
   * {@link ProbeExitedError} if the process exits first.
   */
  waitFor<E extends ProbeEvent = ProbeEvent>(match: Matcher, timeoutMs = 10_000): Promise<E> {
    const matches = toPredicate(match)
    const index = this.#pending.findIndex(matches)
    if (index >= 0) {
      const [event] = this.#pending.splice(index, 1)
      return Promise.resolve(event as E)
    }
    if (this.#exit !== null) return Promise.reject(this.#exitedError())
    return new Promise<E>((resolve, reject) => {
      const waiter: Waiter = {
        matches,
        resolve: (event) => resolve(event as E),
        reject,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
          const what = typeof match === 'string' ? `"${match}"` : 'a matching event'
          reject(
            new ProbeTimeoutError(
              `${this.label} did not report ${what} within ${timeoutMs} ms${this.#stderrTail()}`,
            ),
          )
        }, timeoutMs),
      }
      this.#waiters.push(waiter)
    })
  }

  /** Write `message` as one JSON line to the process's stdin. */
  send(message: object): void {
    this.child.stdin?.write(`${JSON.stringify(message)}\n`)
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.#exit === null) this.child.kill(signal)
  }

  #onLine(line: string): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      return
    }
    if (!isProbeEvent(parsed)) return
    this.events.push(parsed)
    const waiter = this.#waiters.find((w) => w.matches(parsed))
    if (waiter === undefined) {
      this.#pending.push(parsed)
      return
    }
    this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
    clearTimeout(waiter.timer)
    waiter.resolve(parsed)
  }

  #exitedError(): ProbeExitedError {
    const exit = this.#exit
    const how = exit === null ? 'exited' : `exited (code ${exit.code}, signal ${exit.signal})`
    return new ProbeExitedError(`${this.label} ${how} before the awaited event${this.#stderrTail()}`)
  }

  #stderrTail(): string {
    const tail = this.#stderr.trim().split('\n').slice(-10).join('\n')
    return tail === '' ? '' : `\nstderr:\n${tail}`
  }
}
