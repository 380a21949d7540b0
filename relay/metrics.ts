/**
 * The relay's Prometheus metrics (`fleetmesh relay --metrics`): reservations
 * it serves, connections relayed through it and the peers connected, read
 * from libp2p when scraped, besides the process metrics every daemon has.
 * libp2p counts no bytes per relayed connection, so there is no metric of the
 * data relayed. cli.ts imports this module only when --metrics is given.
 */
import { Gauge, type Registry } from 'prom-client'
import { METRICS_PREFIX, relayServerMetrics } from '../net/index.ts'
import type { RunningRelay } from './daemon.ts'

/** Adds the relay's metrics to `registry`. */
export async function relayMetrics(registry: Registry, running: RunningRelay): Promise<void> {
  await relayServerMetrics(running.host, registry)
  new Gauge({
    name: `${METRICS_PREFIX}peers_connected`,
    help: 'Peers with at least one open connection to this relay',
    registers: [registry],
    collect() {
      this.set(running.host.getPeers().length)
    },
  })
}
