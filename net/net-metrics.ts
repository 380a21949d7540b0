/**
 * Metrics of what net/ runs for every role: hole punching (from the
 * service's `attempt` events, so net/holepunch/ knows nothing of Prometheus)
 * and the circuit relay server that coordinators and relays run (read from
 * libp2p when scraped). Each role's metrics module adds these to its registry.
 * prom-client is loaded on first use, as in metrics-server.ts.
 */
import { RELAY_V2_STOP_CODEC } from '@libp2p/circuit-relay-v2'
import type { Registry } from 'prom-client'
import type { HolePunchService, PunchAttempt } from './holepunch/index.ts'
import { extraService, type FleetHost } from './host.ts'
import { METRICS_PREFIX } from './metrics-server.ts'

/**
 * Counts hole-punch attempts (those tried, not those skipped for a symmetric
 * NAT or a backoff) and their successes by our NAT kind and the peer's.
 * Returns a function that stops counting; nothing happens without the service.
 */
export async function holePunchMetrics(host: FleetHost, registry: Registry): Promise<() => void> {
  const { Counter } = await import('prom-client')
  const service = extraService<HolePunchService>(host, 'holePunch')
  const labelNames = ['nat', 'peer_nat'] as const
  const attempts = new Counter({
    name: `${METRICS_PREFIX}holepunch_attempts_total`,
    help: 'Hole-punch attempts tried (not skipped), by our NAT kind and the peer NAT kind',
    labelNames,
    registers: [registry],
  })
  const successes = new Counter({
    name: `${METRICS_PREFIX}holepunch_successes_total`,
    help: 'Hole-punch attempts that gave a direct connection, by our NAT kind and the peer NAT kind',
    labelNames,
    registers: [registry],
  })
  if (service === undefined) return () => {}
  const onAttempt = ({ detail }: CustomEvent<PunchAttempt>) => {
    if (detail.skipped !== undefined) return
    const labels = { nat: service.status().natKind, peer_nat: detail.remoteNat ?? 'unknown' }
    attempts.inc(labels)
    if (detail.ok) successes.inc(labels)
  }
  service.addEventListener('attempt', onAttempt)
  return () => service.removeEventListener('attempt', onAttempt)
}

/** Reservations this host serves as a relay, and connections relayed through it, read when scraped. */
export async function relayServerMetrics(host: FleetHost, registry: Registry): Promise<void> {
  const { Gauge } = await import('prom-client')
  new Gauge({
    name: `${METRICS_PREFIX}relay_reservations_served`,
    help: 'Peers holding a circuit relay reservation on this host',
    registers: [registry],
    collect() {
      this.set(host.services.relay?.reservations.size ?? 0)
    },
  })
  new Gauge({
    name: `${METRICS_PREFIX}relay_connections_open`,
    help: 'Connections currently relayed through this host',
    registers: [registry],
    collect() {
      // one stop stream to the target per relayed connection
      let open = 0
      for (const conn of host.getConnections())
        for (const stream of conn.streams) if (stream.protocol === RELAY_V2_STOP_CODEC) open++
      this.set(open)
    },
  })
}
