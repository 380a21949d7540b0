/**
 * The dashboard's live feed: one `watch` of the whole fleet, with the admin's
 * own key, fanned out to every open page as server-sent events. A page that
 * connects later gets the current machines at once (a snapshot kept here), so
 * pages never poll. When the coordinator goes away the watch is reopened with
 * the backoff `fleetmesh watch` uses (watch-link.ts) and the pages are told,
 * so they can say "coordinator unreachable, retrying"; the fresh snapshot a
 * new stream starts with replaces what they show.
 *
 * Rollouts in waves have no event on a fleet-wide watch, so the list of
 * rollouts is read again (at most once per REFRESH_MS) when something that
 * moves one happens: a new manifest, or a report from a machine a live rollout
 * holds, or an action taken from the dashboard.
 */
import type { ServerResponse } from 'node:http'
import { errorMessage } from '../../lib/index.ts'
import type { MachineView, RolloutView, WatchEvent } from '../../protocol/index.ts'
import type { AdminClient, AdminWatch } from '../client.ts'
import { authorityRefused, linkLost, linkReason, reopenWatch } from '../watch-link.ts'

/** The longest wait for one event before checking whether the feed was stopped. */
const MAX_WAIT_MS = 30_000
/** A comment line this often keeps idle connections open and finds closed ones. */
const KEEPALIVE_MS = 20_000
/** At most one rollout list read per this long, however many events ask for one. */
const REFRESH_MS = 1000
const ROLLOUTS_SHOWN = 50

/** Where the link to the coordinator stands, as the page shows it. */
export type LinkState =
  | { state: 'connecting' }
  | { state: 'live' }
  | { state: 'lost'; reason: string; retryInMs: number; attempt: number }
  | { state: 'refused'; reason: string }

export class UiEvents {
  readonly #client: AdminClient
  readonly #pages = new Set<ServerResponse>()
  readonly #machines = new Map<string, MachineView>()
  #rollouts: RolloutView[] = []
  #link: LinkState = { state: 'connecting' }
  #snapshotSeen = false
  readonly #stop = new AbortController()
  #refreshTimer: NodeJS.Timeout | undefined
  #lastRefresh = 0
  readonly #keepalive: NodeJS.Timeout
  /** Settles when the watch loop has ended (after stop, or a refusal). */
  readonly done: Promise<void>

  constructor(client: AdminClient) {
    this.#client = client
    this.#keepalive = setInterval(() => this.#write(': keepalive\n\n'), KEEPALIVE_MS)
    this.done = this.#run().catch((err: unknown) => {
      if (!this.#stop.signal.aborted) this.#setLink({ state: 'refused', reason: errorMessage(err) })
    })
    this.refreshRollouts()
  }

  /** Machines as last seen, for a page's first paint and for the API. */
  get machines(): MachineView[] {
    return [...this.#machines.values()]
  }

  get link(): LinkState {
    return this.#link
  }

  /** Starts a server-sent event stream for one page: where the link stands, then what is known now. */
  open(res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    })
    this.#pages.add(res)
    res.on('close', () => this.#pages.delete(res))
    this.#send(res, 'link', this.#link)
    if (this.#snapshotSeen) this.#send(res, 'snapshot', { machines: this.machines })
    this.#send(res, 'rollouts', { rollouts: this.#rollouts })
  }

  /** Reads the rollout list again soon (once per REFRESH_MS at most) and sends it to every page. */
  refreshRollouts(): void {
    if (this.#refreshTimer !== undefined || this.#stop.signal.aborted) return
    const wait = Math.max(0, this.#lastRefresh + REFRESH_MS - Date.now())
    this.#refreshTimer = setTimeout(() => {
      this.#lastRefresh = Date.now()
      this.#client
        .rolloutList(ROLLOUTS_SHOWN)
        .then((rollouts) => {
          this.#rollouts = rollouts
          this.#broadcast('rollouts', { rollouts })
        })
        .catch(() => {
          // the link banner tells about a lost coordinator; the next event asks again
        })
        .finally(() => {
          this.#refreshTimer = undefined
        })
    }, wait)
  }

  async stop(): Promise<void> {
    this.#stop.abort(new Error('dashboard stopped'))
    clearInterval(this.#keepalive)
    clearTimeout(this.#refreshTimer)
    for (const res of this.#pages) res.end()
    this.#pages.clear()
    await this.done
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal
    let watch: AdminWatch | null = null
    try {
      watch = await this.#reopen(null)
      while (watch !== null && !signal.aborted) {
        let event: WatchEvent
        try {
          event = await watch.next(MAX_WAIT_MS)
        } catch (err) {
          if ((err as Error).name === 'TimeoutError') continue
          if (signal.aborted) return
          if (authorityRefused(err)) {
            this.#setLink({
              state: 'refused',
              reason: `the coordinator ended the watch: ${err.message}; ask an admin of the fleet for a new certificate`,
            })
            return
          }
          if (!linkLost(err)) throw err
          watch.close()
          watch = await this.#reopen(err)
          continue
        }
        this.#apply(event)
      }
    } finally {
      watch?.close()
    }
  }

  /** The first open (cause null) or a reopen after a loss; null once stopped. */
  async #reopen(cause: unknown): Promise<AdminWatch | null> {
    const signal = this.#stop.signal
    if (cause === null)
      try {
        const watch = await this.#client.watch(null)
        this.#setLink({ state: 'live' })
        return watch
      } catch (err) {
        if (!linkLost(err)) throw err
        cause = err
      }
    let reason = linkReason(cause)
    try {
      return await reopenWatch(
        () => this.#client.watch(null),
        Number.POSITIVE_INFINITY,
        {
          waiting: (retryInMs, attempt) => this.#setLink({ state: 'lost', reason, retryInMs, attempt }),
          stillLost: (err) => {
            reason = linkReason(err)
          },
          reconnected: () => this.#setLink({ state: 'live' }),
        },
        signal,
      )
    } catch (err) {
      if (signal.aborted) return null
      throw err
    }
  }

  #apply(event: WatchEvent): void {
    switch (event.type) {
      case 'snapshot':
        this.#machines.clear()
        for (const m of event.machines) this.#machines.set(m.name, m)
        this.#snapshotSeen = true
        this.#broadcast('snapshot', { machines: event.machines })
        this.refreshRollouts()
        return
      case 'manifest':
        this.#broadcast('manifest', event)
        this.refreshRollouts()
        return
      case 'rollout':
        this.#broadcast('rollout', event.rollout)
        return
      default: {
        const m = event.machine
        const before = this.#machines.get(m.name)
        this.#machines.set(m.name, m)
        this.#broadcast('machine', m)
        if (this.#movesRollout(m, before)) this.refreshRollouts()
      }
    }
  }

  /**
   * The machine's state moved under a rollout that is live, or not listed yet
   * (a rollout in waves starts with no manifest event); a plain rollout, never
   * listed, asks too, at most once per REFRESH_MS.
   */
  #movesRollout(m: MachineView, before: MachineView | undefined): boolean {
    if (m.desiredRolloutId === null || before?.state === m.state) return false
    const listed = this.#rollouts.find((r) => r.rolloutId === m.desiredRolloutId)
    return listed === undefined || listed.state === 'running' || listed.state === 'paused'
  }

  #setLink(link: LinkState): void {
    this.#link = link
    this.#broadcast('link', link)
  }

  #broadcast(event: string, data: unknown): void {
    this.#write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  #send(res: ServerResponse, event: string, data: unknown): void {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  #write(chunk: string): void {
    for (const res of this.#pages) res.write(chunk)
  }
}
