/**
 * A real coordinator in a child process, for the benchmarks that attack one
 * (flood.ts, fuzz.ts): flood-target.ts forked with --expose-gc on a test
 * fleet's state directory. The parent asks it over IPC for a forced-GC
 * snapshot or its frame error counters, reads its resident memory from /proc
 * without disturbing it, and tells an exit it asked for from a crash (which
 * keeps the tail of the child's stderr, where Node prints the stack).
 */
import { type ChildProcess, fork } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { cpuSeconds } from './measure.ts'

export type Snapshot = Record<string, number | undefined>

/** How the child ended: asked to (`stopped`) or not (a crash). */
export interface ChildExit {
  stopped: boolean
  code: number | null
  signal: NodeJS.Signals | null
  /** The last lines the child wrote to stderr */
  stderr: string[]
  at: number
}

/** Resident memory of a process from /proc/<pid>/status, in bytes: now and the kernel's high-water mark. */
export interface Resident {
  rss: number
  peak: number
}

const STDERR_LINES = 200
const TARGET = new URL('./flood-target.ts', import.meta.url).pathname

export async function residentMemory(pid: number): Promise<Resident> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN)
  return { rss: kb('VmRSS') * 1024, peak: kb('VmHWM') * 1024 }
}

export class CoordinatorChild {
  readonly child: ChildProcess
  readonly peerId: string
  readonly stderr: string[]
  readonly exited: Promise<ChildExit>
  #stopping = false

  private constructor(child: ChildProcess, peerId: string, stderr: string[], exited: Promise<ChildExit>) {
    this.child = child
    this.peerId = peerId
    this.stderr = stderr
    this.exited = exited
  }

  /**
   * Starts a coordinator on `stateDir` listening on `listen`; resolves once it
   * serves. Its stderr is passed on to ours when `echo` (the flood's behaviour)
   * and kept either way.
   */
  static async start(stateDir: string, listen: string, echo = true): Promise<CoordinatorChild> {
    const child = fork(TARGET, [stateDir, listen], {
      execArgv: ['--expose-gc', '--disable-warning=ExperimentalWarning'],
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    })
    const stderr: string[] = []
    createInterface({ input: child.stderr! }).on('line', (text) => {
      if (echo) process.stderr.write(`${text}\n`)
      stderr.push(text)
      if (stderr.length > STDERR_LINES) stderr.shift()
    })
    let owner: CoordinatorChild | undefined
    const exited = new Promise<ChildExit>((resolve) =>
      child.once('exit', (code, signal) =>
        // stderr may still hold the stack: let its last lines arrive
        setTimeout(
          () =>
            resolve({
              stopped: owner === undefined ? false : owner.#stopping,
              code,
              signal,
              stderr,
              at: Date.now(),
            }),
          200,
        ),
      ),
    )
    const peerId = await new Promise<string>((resolve, reject) => {
      child.on('message', (m: { ready?: string }) => m.ready && resolve(m.ready))
      void exited.then((e) =>
        reject(
          new Error(
            `coordinator exited (${e.code ?? e.signal}) before it was ready:\n${e.stderr.join('\n')}`,
          ),
        ),
      )
    })
    owner = new CoordinatorChild(child, peerId, stderr, exited)
    return owner
  }

  get pid(): number {
    return this.child.pid as number
  }

  /** Memory, connections, streams and per-peer records after three forced GCs. */
  snapshot(): Promise<Snapshot> {
    return this.#ask('snapshot')
  }

  /** The coordinator's framed-stream failures by kind (oversized, decode, truncated, reset, other). */
  frameErrors(): Promise<Snapshot> {
    return this.#ask('frameErrors')
  }

  resident(): Promise<Resident> {
    return residentMemory(this.pid)
  }

  cpuSeconds(): Promise<number> {
    return cpuSeconds(this.pid)
  }

  async stop(): Promise<ChildExit> {
    this.#stopping = true
    if (this.child.connected) this.child.send('stop')
    return this.exited
  }

  #ask(question: 'snapshot' | 'frameErrors'): Promise<Snapshot> {
    return new Promise<Snapshot>((resolve, reject) => {
      const on = (m: Record<string, Snapshot | undefined>) => {
        const answer = m[question]
        if (answer === undefined) return
        this.child.off('message', on)
        resolve(answer)
      }
      this.child.on('message', on)
      void this.exited.then(() => reject(new Error(`coordinator exited before answering ${question}`)))
      this.child.send(question)
    })
  }
}
