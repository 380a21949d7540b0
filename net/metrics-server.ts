/**
 * The Prometheus endpoint every daemon can serve (`--metrics host:port`):
 * `GET /metrics` in the text exposition format from one prom-client
 * {@link Registry} per process (never prom-client's global one, so nothing
 * else in the process can add to or clash with it), with the standard
 * process and Node.js metrics under the `fleetmesh_` prefix. The roles add
 * their own metrics to the registry (coordinator/metrics.ts, relay/metrics.ts,
 * agent/metrics.ts).
 *
 * The endpoint has no authentication, so it listens on loopback unless the
 * operator says `--metrics-public`.
 *
 * prom-client is loaded only when --metrics is given: every `fleetmesh`
 * command imports this folder, and most never serve metrics.
 *
 * @example
 *
 * ```ts
 * const metrics = await startMetrics(parsed, log.say) // undefined without --metrics
 * new Gauge({ name: 'fleetmesh_example', help: '…', registers: [metrics.registry] })
 * // …
 * await metrics?.close()
 * ```
 */
import { createServer, type Server } from 'node:http'
import { isIP } from 'node:net'
import type { Registry } from 'prom-client'
import { errorMessage, flag, type Options, optionLabel, type Parsed, str, UsageError } from '../lib/index.ts'
import type { Say } from './daemon-log.ts'

export const METRICS_PREFIX = 'fleetmesh_'

export const METRICS_OPTIONS = {
  metrics: {
    type: 'string',
    value: '<host:port>',
    description:
      'serve Prometheus metrics at http://<host:port>/metrics (port 0: a free port, printed at start)',
  },
  'metrics-public': {
    type: 'boolean',
    description:
      '--metrics may be a non-loopback address: /metrics has no authentication and shows the fleet size and health to anyone who can reach it, so only with a firewall or a trusted network',
  },
} as const satisfies Options

export interface MetricsAddress {
  host: string
  port: number
}

/** The address --metrics names, checked; undefined without the option. */
export function metricsAddress(p: Parsed): MetricsAddress | undefined {
  const value = str(p, 'metrics')
  if (value === undefined) return undefined
  const label = optionLabel(p, 'metrics')
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value)
  const host = m?.[1] ?? m?.[2]
  const port = Number(m?.[3])
  if (host === undefined || port > 65_535 || (m?.[1] !== undefined && isIP(host) !== 6))
    throw new UsageError(
      `${label}: "${value}" is not host:port; give e.g. 127.0.0.1:9464, [::1]:9464 or 127.0.0.1:0 for a free port`,
    )
  if (!isLoopback(host) && !flag(p, 'metrics-public'))
    throw new UsageError(
      `${label}: ${host} is not a loopback address, and /metrics has no authentication; ` +
        'serve it on 127.0.0.1 (and scrape locally or through a tunnel), or add --metrics-public to expose it',
    )
  return { host, port }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

/**
 * A registry with the standard process metrics, less the three gauges
 * prom-client names `…_total` (sums of other gauges), which Prometheus
 * reserves for counters: `promtool check metrics` rejects them.
 */
export async function metricsRegistry(): Promise<Registry> {
  const { collectDefaultMetrics, Registry } = await import('prom-client')
  const register = new Registry()
  collectDefaultMetrics({ register, prefix: METRICS_PREFIX })
  for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
    register.removeSingleMetric(`${METRICS_PREFIX}nodejs_${name}`)
  return register
}

/** --metrics could not be served (the port is taken, the address is not this host's). */
export class MetricsServerError extends Error {
  override name = 'MetricsServerError'
}

export interface MetricsServer {
  /** Where it listens: the real port when 0 was asked for. */
  address: MetricsAddress
  url: string
  close(): Promise<void>
}

/** Serves `GET /metrics` from `registry` on `address`; every other path is 404. */
export async function startMetricsServer(
  address: MetricsAddress,
  registry: Registry,
): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('use GET\n')
      return
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: unknown) =>
        res
          .writeHead(500, { 'content-type': 'text/plain' })
          .end(`collecting metrics failed: ${errorMessage(err)}\n`),
    )
  })
  await listen(server, address)
  const bound = server.address()
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port
  const host = address.host.includes(':') ? `[${address.host}]` : address.host
  return {
    address: { host: address.host, port },
    url: `http://${host}:${port}/metrics`,
    close: () =>
      new Promise<void>((resolveClose) => {
        server.close(() => resolveClose())
        // a scraper's idle keep-alive connection must not hold the daemon's stop
        server.closeAllConnections()
      }),
  }
}

function listen(server: Server, { host, port }: MetricsAddress): Promise<void> {
  return new Promise((resolveListen, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'the port is in use; pick another port, or 0 for a free one'
          : err.code === 'EADDRNOTAVAIL'
            ? 'the address is not one of this host’s'
            : errorMessage(err)
      reject(new MetricsServerError(`cannot serve metrics on ${host}:${port}: ${why}`, { cause: err }))
    })
    server.listen(port, host, () => resolveListen())
  })
}

export interface DaemonMetrics {
  registry: Registry
  server: MetricsServer
  close(): Promise<void>
}

/**
 * What --metrics asks for: a registry with the process metrics, served, and
 * announced as a `metrics` event. Undefined without --metrics. Call it before
 * the daemon starts, so a taken port fails before anything else runs.
 */
export async function startMetrics(p: Parsed, say: Say): Promise<DaemonMetrics | undefined> {
  const address = metricsAddress(p)
  if (address === undefined) return undefined
  const registry = await metricsRegistry()
  const server = await startMetricsServer(address, registry)
  say('metrics', { url: server.url, ...server.address }, `metrics at ${server.url}`)
  return { registry, server, close: () => server.close() }
}

/** What `starting` resolves to; if it fails, the metrics endpoint is closed first and the error passed on. */
export async function closeMetricsOnFailure<T>(
  metrics: DaemonMetrics | undefined,
  starting: Promise<T>,
): Promise<T> {
  try {
    return await starting
  } catch (err) {
    await metrics?.close()
    throw err
  }
}
