/**
 * The agent's Prometheus metrics (`fleetmesh agent --metrics`), kept from the
 * events the daemon already emits (link up or down, status reports) and read
 * from the outbox and the host when scraped:
 *
 *   fleetmesh_link_connected{path}       1 on the path the coordinator link uses now
 *   fleetmesh_reports_queued             signed reports not yet acknowledged
 *   fleetmesh_update_state{state}        1 for the state of the latest report
 *   fleetmesh_last_update_seconds        the last finished update, first report to outcome
 *   fleetmesh_holepunch_*                attempts and successes (net/net-metrics.ts)
 *
 * cli.ts imports this module only when --metrics is given (see net/metrics-server.ts).
 */
import { Gauge, type Registry } from 'prom-client'
import { holePunchMetrics, METRICS_PREFIX } from '../net/index.ts'
import { UPDATE_STATES } from '../protocol/index.ts'
import type { RunningAgent } from './daemon.ts'

const PATHS = ['direct', 'relayed'] as const
/** An update is over with one of these; anything else after one starts the next. */
const OUTCOMES = new Set(['committed', 'rolled-back', 'failed', 'refused'])

export interface AgentMetrics {
  /** Give it every event the daemon emits. */
  observe(event: string, fields: Record<string, unknown>): void
  /** Once the daemon runs: the metrics read from it. Returns a function that detaches them. */
  attach(running: RunningAgent): Promise<() => void>
}

export function agentMetrics(registry: Registry): AgentMetrics {
  const registers = [registry]
  const link = new Gauge({
    name: `${METRICS_PREFIX}link_connected`,
    help: 'Whether the link to the coordinator is up, by its path (direct or relayed)',
    labelNames: ['path'],
    registers,
  })
  for (const path of PATHS) link.set({ path }, 0)
  const state = new Gauge({
    name: `${METRICS_PREFIX}update_state`,
    help: 'The update state of the latest status report (1 for that state, 0 for the others)',
    labelNames: ['state'],
    registers,
  })
  for (const s of UPDATE_STATES) state.set({ state: s }, 0)
  const lastUpdate = new Gauge({
    name: `${METRICS_PREFIX}last_update_seconds`,
    help: 'How long the last finished update took, from its first report to its outcome (0 before one)',
    registers,
  })
  let started: number | undefined
  let current: string | undefined
  return {
    observe(event, fields) {
      if (event === 'connected' || event === 'disconnected')
        for (const path of PATHS) link.set({ path }, event === 'connected' && fields.path === path ? 1 : 0)
      if (event !== 'status' || typeof fields.state !== 'string' || fields.state === current) return
      if (current !== undefined) state.set({ state: current }, 0)
      current = fields.state
      state.set({ state: current }, 1)
      if (OUTCOMES.has(current)) {
        if (started !== undefined) lastUpdate.set((performance.now() - started) / 1000)
        started = undefined
      } else if (current !== 'idle') started ??= performance.now()
    },
    async attach(running) {
      new Gauge({
        name: `${METRICS_PREFIX}reports_queued`,
        help: 'Signed status reports in the outbox, not yet acknowledged by the coordinator',
        registers,
        collect() {
          this.set(running.outbox.size)
        },
      })
      return holePunchMetrics(running.host, registry)
    },
  }
}
