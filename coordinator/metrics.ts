/**
 * The coordinator's Prometheus metrics (`fleetmesh coordinator --metrics`).
 * Most are read from what the daemon already keeps when Prometheus scrapes
 * (sessions, counters, one store read for the update states), so the hot
 * paths only keep plain counts; the commit latency is the one thing observed
 * as it happens, from the status ingest's commit hook.
 *
 * Labels are bounded: paths, transports, update states, refusal codes and
 * frame error kinds are fixed sets, and no metric is labelled by machine.
 *
 * cli.ts imports this module only when --metrics is given (see net/metrics-server.ts).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { holePunchMetrics, METRICS_PREFIX, relayServerMetrics } from '../net/index.ts'
import { CONNECTION_PATHS, CONNECTION_TRANSPORTS, UPDATE_STATES } from '../protocol/index.ts'
import type { RunningCoordinator } from './daemon.ts'

/** The codes the control protocol refuses a stream with (control.ts), shown at 0 before any happens. */
const CONTROL_REFUSALS = ['not-enrolled', 'wrong-machine', 'wire-version'] as const
/** What the framing layer counts (protocol/framing.ts): frames it refused, and streams that failed. */
const REFUSED_FRAMES = ['oversized', 'decode'] as const
const STREAM_ERRORS = ['truncated', 'reset', 'other'] as const

const name = (n: string) => `${METRICS_PREFIX}${n}`

/** Adds the coordinator's metrics to `registry`; returns a function that detaches them from the daemon. */
export async function coordinatorMetrics(
  registry: Registry,
  running: RunningCoordinator,
): Promise<() => void> {
  const { control, counters, store } = running
  const registers = [registry]
  new Gauge({
    name: name('agents_connected'),
    help: 'Agents with a live control stream, by how their connection reaches the coordinator (path) and its transport (of the hop to the relay when relayed)',
    labelNames: ['path', 'transport'],
    registers,
    collect() {
      // every pair shown, at 0 too; a transport that is neither TCP nor QUIC (not fleetmesh's) as "other"
      this.reset()
      for (const path of CONNECTION_PATHS)
        for (const transport of CONNECTION_TRANSPORTS) this.set({ path, transport }, 0)
      for (const machine of control.online.keys()) {
        const info = control.sessionInfo(machine)
        if (info !== undefined) this.inc({ path: info.path, transport: info.transport ?? 'other' })
      }
    },
  })
  new Gauge({
    name: name('machines'),
    help: 'Machines by the update state of their latest status report (machines that never reported are not counted)',
    labelNames: ['state'],
    registers,
    async collect() {
      const byState = new Map<string, number>(UPDATE_STATES.map((s) => [s, 0]))
      for (const status of (await store.latestStatuses()).values()) {
        const state = status.report.state
        byState.set(state, (byState.get(state) ?? 0) + 1)
      }
      for (const [state, n] of byState) this.set({ state }, n)
    },
  })
  const ingested = new Counter({
    name: name('reports_ingested_total'),
    help: 'Status reports committed to the store (duplicates included)',
    registers,
  })
  const latency = new Histogram({
    name: name('report_commit_seconds'),
    help: 'Time from a status report reaching the ingest queue to its durable commit',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  })
  control.ingest.onCommitted = (seconds) => {
    ingested.inc(seconds.length)
    for (const s of seconds) latency.observe(s)
  }
  new Counter({
    name: name('manifests_pushed_total'),
    help: 'Manifests sent to connected agents',
    registers,
    collect() {
      this.reset()
      this.inc(control.counts.manifestsPushed)
    },
  })
  new Counter({
    name: name('frames_refused_total'),
    help: 'Control streams refused (by refusal code) and frames the framing layer refused (oversized, decode)',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset()
      for (const reason of CONTROL_REFUSALS) this.inc({ reason }, 0)
      for (const [reason, n] of control.counts.refused) this.inc({ reason }, n)
      for (const reason of REFUSED_FRAMES) this.inc({ reason }, counters.get(reason))
    },
  })
  new Counter({
    name: name('stream_errors_total'),
    help: 'Streams of any fleetmesh protocol reset after an error, by kind',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset()
      for (const kind of STREAM_ERRORS) this.inc({ kind }, counters.get(kind))
    },
  })
  new Gauge({
    name: name('relay_reservations_held'),
    help: 'Relays (of --reserve-on) currently holding a reservation for this coordinator',
    registers,
    collect() {
      this.set(running.reservations?.held ?? 0)
    },
  })
  await relayServerMetrics(running.host, registry)
  const unpunch = await holePunchMetrics(running.host, registry)
  return () => {
    control.ingest.onCommitted = undefined
    unpunch()
  }
}
