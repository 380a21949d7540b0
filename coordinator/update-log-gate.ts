/**
 * `update-log` frames from agents (protocol/update-log.ts): the live output of
 * a machine's running update, passed on as fleet events to the admins who
 * watch that machine (`fleetmesh logs <machine> --follow`), never stored: the
 * final status report carries the log. A frame of the wrong shape or size
 * (over MAX_UPDATE_LOG_CHUNK, or ending past MAX_REPORT_LOG) never gets here:
 * decoding refuses it and the stream is reset, like any bad frame.
 *
 * A frame is passed on after the reports the agent sent before it are stored,
 * so a follower sees output and state changes in the order the agent produced
 * them. Dropped, and counted, rather than refused: a frame about another update
 * than the machine's current one (as its newest stored report names it; an
 * agent whose report could not be queued must not lose its link for it), and
 * frames beyond the machine's rate, so an agent cannot flood the admins that
 * follow it: each machine has a bucket of RATE.burstBytes that refills at
 * RATE.bytesPerSecond, and a frame costs its bytes but at least RATE.frameBytes.
 */
import { MAX_REPORT_LOG, UPDATE_LOG_CAPABILITY, type UpdateLogFrame, utf8Length } from '../protocol/index.ts'
import type { FleetEvents } from './events.ts'
import type { FleetStore } from './store.ts'

/** An honest agent sends at most MAX_REPORT_LOG bytes an update, in a few frames: one update fits the burst. */
export const UPDATE_LOG_RATE = { burstBytes: 2 * MAX_REPORT_LOG, bytesPerSecond: 4096, frameBytes: 256 }

interface MachineLogState {
  /** The machine's current update as last read from the store. */
  current: string | null | undefined
  tokens: number
  refilledAt: number
}

export interface UpdateLogSource {
  store: Pick<FleetStore, 'latestStatus'>
  events: Pick<FleetEvents, 'emit'>
}

export class UpdateLogGate {
  /** What the coordinator's hello names, so that agents send their updates' output. */
  static readonly capability = UPDATE_LOG_CAPABILITY
  /** The store and events, read when first needed (the control service's, set in its constructor). */
  readonly #source: () => UpdateLogSource
  readonly #rate: typeof UPDATE_LOG_RATE
  readonly #now: () => number
  readonly #machines = new Map<string, MachineLogState>()
  /** Frames dropped since start: over a machine's rate, or about an update that is not its current one. */
  readonly dropped = { rate: 0, stale: 0 }

  constructor(source: () => UpdateLogSource, rate = UPDATE_LOG_RATE, now: () => number = Date.now) {
    this.#source = source
    this.#rate = rate
    this.#now = now
  }

  /**
   * Takes a frame from `machine`'s control stream; `after` settles once the
   * reports received before it are stored. Resolves (never rejects) once the
   * frame was passed on or dropped: the control stream chains the next report's
   * acknowledgement behind it.
   */
  take(machine: string, frame: UpdateLogFrame, after: Promise<void>): Promise<void> {
    if (!this.#admit(machine, frame)) {
      this.dropped.rate++
      return after
    }
    return after.then(() => this.#pass(machine, frame)).catch(() => {})
  }

  #admit(machine: string, frame: UpdateLogFrame): boolean {
    const now = this.#now()
    const { burstBytes, bytesPerSecond, frameBytes } = this.#rate
    let state = this.#machines.get(machine)
    if (state === undefined) {
      state = { current: undefined, tokens: burstBytes, refilledAt: now }
      this.#machines.set(machine, state)
    }
    state.tokens = Math.min(burstBytes, state.tokens + ((now - state.refilledAt) / 1000) * bytesPerSecond)
    state.refilledAt = now
    const cost = Math.max(frameBytes, utf8Length(frame.text))
    if (state.tokens < cost) return false
    state.tokens -= cost
    return true
  }

  async #pass(machine: string, frame: UpdateLogFrame): Promise<void> {
    const state = this.#machines.get(machine)
    if (state === undefined) return
    if (state.current !== frame.manifestId)
      state.current = (await this.#source().store.latestStatus(machine))?.report.manifestId ?? null
    if (state.current !== frame.manifestId) {
      this.dropped.stale++
      return
    }
    const { manifestId, offset, text } = frame
    this.#source().events.emit({ type: 'update-log', machine, manifestId, offset, text })
  }
}
