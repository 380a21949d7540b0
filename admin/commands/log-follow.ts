/**
 * `fleetmesh logs <machine> --follow`: after the last update log, the update
 * running on the machine (or, if none is, the next one to start) live: its
 * state changes and what its activation and health checks print, as the agent
 * sends it, until the update ends. It rides a watch of that one machine
 * (AdminClient.watchMachine), whose `update-log` events carry the output at
 * byte offsets of the update's live log: a jump in the offsets is output lost
 * on the way (the agent was offline for a moment), and shown as such. Live
 * output is best effort; the final status report carries the update's log
 * durably, so a follow that may have missed output (a gap, the agent offline,
 * or its own link to the coordinator lost) prints that reported log before
 * the outcome: nothing the update printed is missing at the end. Exits as
 * `deploy` does (EXIT in admin/rollout-outcome.ts): 0 once it committed, 1 when
 * it rolled back, failed or was refused, 2 when `--timeout` passed first.
 */
import { errorMessage } from '../../lib/index.ts'
import type {
  MachineLog,
  MachineView,
  MachineWatchEvent,
  UpdateLogEvent,
  UpdateState,
} from '../../protocol/index.ts'
import { utf8Length } from '../../protocol/index.ts'
import { AdminRequestError, type MachineWatch } from '../client.ts'
import { EXIT } from '../rollout-outcome.ts'
import { authorityRefused, linkLost, linkReason, reopenWatch, sayReconnect } from '../watch-link.ts'
import { MAX_WAIT_MS } from './rollout-follow.ts'

const FINAL: readonly UpdateState[] = ['committed', 'rolled-back', 'failed', 'refused']

export interface FollowOptions {
  /** Give up after this long; null waits as long as it takes. */
  timeoutMs: number | null
  json: boolean
  /** Where the lines go (stdout). */
  write: (text: string) => void
  /** Where notes for the operator go (stderr). */
  say: (line: string) => void
  /** An event already read from the watch (its snapshot). */
  first?: MachineWatchEvent
  /** Opens the machine's watch again after the link to the coordinator broke. */
  reopen: () => Promise<MachineWatch>
  /** The machine's last reported update log (its durable end), printed when live output may be missing. */
  lastLog: () => Promise<MachineLog>
}

/** Follows `machine`'s running (or next) update on an open watch of it; resolves with the exit code. */
export async function followUpdate(
  opened: MachineWatch,
  machine: string,
  options: FollowOptions,
): Promise<number> {
  let watch = opened
  const follower = new UpdateFollower(machine, options)
  const deadline = options.timeoutMs === null ? Number.POSITIVE_INFINITY : Date.now() + options.timeoutMs
  const early = options.first === undefined ? undefined : follower.take(options.first)
  if (early !== undefined) return follower.settle()
  while (true) {
    const remaining = deadline - Date.now()
    if (remaining <= 0) return follower.timedOut(options.timeoutMs ?? 0)
    let event: MachineWatchEvent
    try {
      event = await watch.next(Math.min(remaining, MAX_WAIT_MS))
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') continue
      if (authorityRefused(err))
        throw new AdminRequestError(
          err.code,
          `the coordinator ended the follow: ${err.message}; ask an admin of the fleet for a new certificate`,
        )
      if (!linkLost(err)) throw err
      // The new stream starts with a fresh snapshot: an update that ended meanwhile ends the follow.
      watch.close()
      follower.missed()
      options.say(`lost the coordinator (${linkReason(err)}) while following ${machine}; the update goes on`)
      const again = await reopenWatch(options.reopen, deadline, sayReconnect(options.say))
      if (again === null) return follower.timedOut(options.timeoutMs ?? 0)
      watch = again
      continue
    }
    if (follower.take(event) !== undefined) return follower.settle()
  }
}

/** What the follow has seen so far, and what it prints. */
class UpdateFollower {
  readonly #machine: string
  readonly #options: FollowOptions
  /** The update followed; null until one runs. */
  #following: string | null = null
  /** The update that had already ended when the follow started: its late output is not the next update's. */
  #ended: string | null = null
  #state: UpdateState | null = null
  /** The offset the next output of the followed update should start at. */
  #expected = 0
  #atLineStart = true
  #snapshotSeen = false
  /** Live output of the followed update may be missing (a gap, the agent or this follow offline). */
  #missed = false
  /** The outcome, printed by settle() once the follow has shown everything before it. */
  #settled: { obj: object; human: string; code: number } | null = null

  constructor(machine: string, options: FollowOptions) {
    this.#machine = machine
    this.#options = options
  }

  /** Output may have been lost: the link to the coordinator broke. */
  missed(): void {
    this.#missed = true
  }

  /**
   * Ends the follow of an update that reached a final state: the log its
   * agent reported (when live output may be missing), then the outcome.
   */
  async settle(): Promise<number> {
    const settled = this.#settled
    if (settled === null) throw new Error('settle() before the update ended')
    if (this.#missed && this.#following !== null) await this.#reportedLog(this.#following)
    this.#event(settled.obj, settled.human)
    return settled.code
  }

  async #reportedLog(manifestId: string): Promise<void> {
    let last: MachineLog
    try {
      last = await this.#options.lastLog()
    } catch (err) {
      this.#options.say(`could not read the update log ${this.#machine} reported: ${errorMessage(err)}`)
      return
    }
    if (last.manifestId !== manifestId || last.log === null || last.log === '') return
    if (this.#options.json) this.#options.write(`${JSON.stringify({ type: 'log', ...last })}\n`)
    else
      this.#event(
        { type: 'log' },
        `[live output was lost on the way; the log ${this.#machine} reported for this update:]\n${last.log.trimEnd()}`,
      )
  }

  /** Takes one event; the exit code once the followed update ended (settle() prints the outcome). */
  take(e: MachineWatchEvent): number | undefined {
    switch (e.type) {
      case 'snapshot': {
        const m = e.machines.find((x) => x.name === this.#machine)
        const first = !this.#snapshotSeen
        this.#snapshotSeen = true
        if (m === undefined) return undefined
        if (first && m.manifestId !== null && m.state !== null && FINAL.includes(m.state))
          this.#ended = m.manifestId
        if (first && !this.#running(m))
          this.#options.say(`waiting for the next update on ${this.#machine}… (Ctrl-C to stop)`)
        return this.#status(m)
      }
      case 'status':
        return this.#status(e.machine)
      case 'online':
      case 'offline':
        if (e.machine.name === this.#machine && this.#following !== null) {
          if (e.type === 'offline') this.#missed = true
          this.#event({ type: e.type, machine: this.#machine }, `${this.#machine} is ${e.type}`)
        }
        return undefined
      case 'update-log':
        this.#output(e)
        return undefined
      default:
        return undefined
    }
  }

  timedOut(timeoutMs: number): number {
    const after = `timed out after ${Math.round(timeoutMs / 1000)} s`
    const human =
      this.#following === null
        ? `${after}; no update started on ${this.#machine}`
        : `${after}; update ${this.#following} goes on (${this.#state ?? 'pending'})`
    this.#event({ type: 'timeout', machine: this.#machine, manifestId: this.#following }, human)
    return EXIT.timedOut
  }

  #running(m: MachineView): boolean {
    return m.manifestId !== null && m.state !== null && m.state !== 'idle' && !FINAL.includes(m.state)
  }

  #status(m: MachineView): number | undefined {
    if (m.name !== this.#machine || m.manifestId === null || m.state === null || m.state === 'idle')
      return undefined
    if (m.manifestId !== this.#following) {
      // An update that had ended before the follow started is not the next one.
      if (m.manifestId === this.#ended) return undefined
      this.#start(m.manifestId)
    }
    if (m.state === this.#state) return undefined
    this.#state = m.state
    const generation = m.desiredGeneration === null ? '' : ` (generation ${m.desiredGeneration})`
    const reason = m.error === null ? '' : `: ${m.error.code}: ${m.error.message}`
    const fields = { machine: m.name, manifestId: m.manifestId, state: m.state, error: m.error }
    if (!FINAL.includes(m.state)) {
      this.#event({ type: 'state', ...fields }, `-- ${m.name}: ${m.state}${generation}`)
      return undefined
    }
    const code = m.state === 'committed' ? EXIT.committed : EXIT.notCommitted
    this.#settled = {
      obj: { type: 'settled', ...fields },
      human: `-- ${m.name}: ${m.state}${generation}${reason}`,
      code,
    }
    return code
  }

  #start(manifestId: string): void {
    if (this.#following !== null)
      this.#options.say(`update ${this.#following} gave way to update ${manifestId}; following that`)
    this.#following = manifestId
    this.#state = null
    this.#expected = 0
  }

  #output(e: UpdateLogEvent): void {
    if (this.#following === null && e.manifestId !== this.#ended) this.#start(e.manifestId)
    if (e.manifestId !== this.#following) return
    if (e.offset !== this.#expected) {
      this.#missed = true
      // Ahead: chunks lost while the agent was offline. Behind: the agent restarted and resumed the update.
      const human =
        e.offset > this.#expected
          ? `[… ${e.offset - this.#expected} bytes of output lost on the way]`
          : '[the agent restarted; its output of this update starts over]'
      this.#event(
        { type: 'gap', manifestId: e.manifestId, expected: this.#expected, offset: e.offset },
        human,
      )
    }
    this.#expected = e.offset + utf8Length(e.text)
    if (this.#options.json) this.#options.write(`${JSON.stringify({ ...e, type: 'output' })}\n`)
    else this.#print(e.text)
  }

  /** An event: a JSON line, or a line of its own between the output. */
  #event(obj: object, human: string): void {
    if (this.#options.json) this.#options.write(`${JSON.stringify(obj)}\n`)
    else this.#print(`${this.#atLineStart ? '' : '\n'}${human}\n`)
  }

  #print(text: string): void {
    this.#options.write(text)
    this.#atLineStart = text.endsWith('\n')
  }
}

/** A refusal that means the coordinator predates following one machine. */
export function followUnsupported(err: unknown): boolean {
  return err instanceof AdminRequestError && err.code === 'bad-payload'
}

export function describeUnsupported(err: unknown): string {
  return `the coordinator cannot follow one machine's update (${errorMessage(err)}); upgrade it, or use "fleetmesh watch"`
}
