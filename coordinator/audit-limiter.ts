/**
 * How many refusals of unauthenticated admin requests (no valid certificate
 * chain yet: garbage, bad signatures, stale requests, foreign or revoked
 * certificates) reach the hash-chained audit log. Anyone who can open a libp2p
 * connection can send those, so each peer gets `perPeer` recorded refusals per
 * window and all peers together `global` (a fresh key per request is free);
 * refusals beyond that are refused just the same but only counted, and the
 * count goes into the next record for that peer (or the next one at all) once
 * its window has passed. The record that reaches a limit says so, so the log
 * shows when refusals stopped being recorded one by one.
 */

export interface RefusalLimits {
  /** Recorded refusals per peer per window. */
  perPeer: number
  /** Recorded refusals of all peers together per window. */
  global: number
  windowMs: number
  /** Peers tracked at once; beyond it new peers count only towards the global limit. */
  maxPeers: number
}

export const DEFAULT_REFUSAL_LIMITS: RefusalLimits = {
  perPeer: 10,
  global: 100,
  windowMs: 10 * 60_000,
  maxPeers: 10_000,
}

/** Whether to record one refusal, and what to add to its detail. */
export type RefusalVerdict = { record: true; note: string } | { record: false }

interface Window {
  start: number
  recorded: number
  /** Refusals not recorded in this window. */
  suppressed: number
  /** Refusals not recorded in earlier windows, not yet reported. */
  unreported: number
  unreportedSince: number
}

export class RefusalLimiter {
  readonly #limits: RefusalLimits
  readonly #peers = new Map<string, Window>()
  readonly #global: Window
  /** Refusals counted and not recorded, since start. */
  suppressed = 0

  constructor(limits: Partial<RefusalLimits> = {}) {
    this.#limits = { ...DEFAULT_REFUSAL_LIMITS, ...limits }
    this.#global = freshWindow(0)
  }

  /** Counts one refusal of an unauthenticated request from `peerId` at `now`. */
  admit(peerId: string, now: number): RefusalVerdict {
    const { perPeer, global } = this.#limits
    const peer = this.#peerWindow(peerId, now)
    this.#roll(this.#global, now)
    if (peer !== undefined) this.#roll(peer, now)
    if ((peer !== undefined && peer.recorded >= perPeer) || this.#global.recorded >= global) {
      if (peer !== undefined) peer.suppressed++
      this.#global.suppressed++
      this.suppressed++
      return { record: false }
    }
    const notes: string[] = []
    if (peer !== undefined) notes.push(...this.#take(peer, perPeer, 'from this peer'))
    notes.push(...this.#take(this.#global, global, 'of unauthenticated requests from any peer'))
    return { record: true, note: notes.map((n) => ` (${n})`).join('') }
  }

  /** Records one refusal in `w`: the notes about refusals left unrecorded before it, and about reaching the limit. */
  #take(w: Window, limit: number, whose: string): string[] {
    const notes: string[] = []
    if (w.unreported > 0) {
      notes.push(
        `${w.unreported} more refusals ${whose} since ${iso(w.unreportedSince)} were counted, not recorded`,
      )
      w.unreported = 0
    }
    w.recorded++
    if (w.recorded === limit) {
      notes.push(
        `rate limit of ${limit} recorded refusals ${whose} reached: further ones until ` +
          `${iso(w.start + this.#limits.windowMs)} are refused and only counted`,
      )
    }
    return notes
  }

  #roll(w: Window, now: number): void {
    if (now < w.start + this.#limits.windowMs) return
    if (w.suppressed > 0) {
      if (w.unreported === 0) w.unreportedSince = w.start
      w.unreported += w.suppressed
    }
    w.start = now
    w.recorded = 0
    w.suppressed = 0
  }

  /** The peer's window, undefined when too many peers are tracked to add it. */
  #peerWindow(peerId: string, now: number): Window | undefined {
    const known = this.#peers.get(peerId)
    if (known !== undefined) return known
    if (this.#peers.size >= this.#limits.maxPeers) this.#forgetQuiet(now)
    if (this.#peers.size >= this.#limits.maxPeers) return undefined
    const w = freshWindow(now)
    this.#peers.set(peerId, w)
    return w
  }

  /** Drops peers whose window has passed with nothing left to report. */
  #forgetQuiet(now: number): void {
    for (const [peerId, w] of this.#peers) {
      if (now >= w.start + this.#limits.windowMs && w.suppressed === 0 && w.unreported === 0)
        this.#peers.delete(peerId)
    }
  }
}

function freshWindow(start: number): Window {
  return { start, recorded: 0, suppressed: 0, unreported: 0, unreportedSince: start }
}

const iso = (ms: number): string => new Date(ms).toISOString()
