/**
 * `fleetmesh ping <machine>`: round trips from the coordinator to a machine's
 * agent over its control stream, printed like ping(8), with the path the
 * coordinator sees (direct or relayed, and the agent's address) and this
 * admin's own round trip to the coordinator.
 */
import { type CommandSpec, flag, int, output, parseCommand, UsageError } from '../../lib/index.ts'
import { MAX_PING_COUNT, type PingResult, PROBE_TIMEOUT_MS } from '../../protocol/index.ts'
import { machineArgument, REMOTE_OPTIONS, withClient } from '../session.ts'

const PING_USAGE = 'fleetmesh ping <machine> [--count N] [--coordinator <multiaddr>]... [--json]'
const DEFAULT_COUNT = 4

export const PING_COMMAND: CommandSpec = {
  name: 'ping',
  summary:
    "Measure round trips from the coordinator to a machine over its control link, and the link's path. Exits 1 when no probe is answered.",
  usage: PING_USAGE,
  options: {
    count: {
      type: 'string',
      value: 'N',
      description: `probes to send, 1 to ${MAX_PING_COUNT}`,
      default: String(DEFAULT_COUNT),
    },
    ...REMOTE_OPTIONS,
  },
  examples: ['fleetmesh ping edge-1', 'fleetmesh ping edge-1 --count 10 --json'],
}

/** Round trips, min/avg/max over the answered probes (null when none was). */
export interface PingSummary {
  sent: number
  received: number
  minMs: number | null
  avgMs: number | null
  maxMs: number | null
}

export function summarise(probes: PingResult['probes']): PingSummary {
  const rtts = probes.flatMap((p) => (p.rttMs === null ? [] : [p.rttMs]))
  const round = (ms: number) => Math.round(ms * 1000) / 1000
  return {
    sent: probes.length,
    received: rtts.length,
    minMs: rtts.length ? Math.min(...rtts) : null,
    avgMs: rtts.length ? round(rtts.reduce((a, b) => a + b, 0) / rtts.length) : null,
    maxMs: rtts.length ? Math.max(...rtts) : null,
  }
}

/** Three significant digits for a measured time; libp2p's whole milliseconds stay whole. */
const ms = (value: number): string =>
  Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)

export function describePing(r: PingResult, summary: PingSummary, coordinatorRttMs: number | null): string {
  const lost = summary.sent === 0 ? 0 : Math.round((100 * (summary.sent - summary.received)) / summary.sent)
  const lines = [
    `PING ${r.machine} over its control link: ${r.path}, ${r.remoteAddr} (${r.software})`,
    ...r.probes.map((p) =>
      p.rttMs === null
        ? `no reply from ${r.machine}: probe=${p.seq} (none within ${PROBE_TIMEOUT_MS / 1000} s)`
        : `reply from ${r.machine}: probe=${p.seq} time=${ms(p.rttMs)} ms`,
    ),
    '',
    `--- ${r.machine} ping statistics ---`,
    `${summary.sent} probes sent, ${summary.received} replies, ${lost}% lost`,
  ]
  if (summary.minMs !== null && summary.avgMs !== null && summary.maxMs !== null)
    lines.push(`rtt min/avg/max = ${ms(summary.minMs)}/${ms(summary.avgMs)}/${ms(summary.maxMs)} ms`)
  lines.push(
    `this admin to the coordinator: ${coordinatorRttMs === null ? 'no answer to a libp2p ping' : `${ms(coordinatorRttMs)} ms`}`,
  )
  return lines.join('\n')
}

export async function ping(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, PING_COMMAND)
  const machine = machineArgument(p, 'ping', PING_USAGE)
  if (machine === undefined) throw new UsageError(`name the machine to ping\nusage: ${PING_USAGE}`)
  const count = int(p, 'count', DEFAULT_COUNT, 1, MAX_PING_COUNT)
  const { result, coordinatorRttMs } = await withClient(home, p, async (c) => {
    const pinged = await c.ping(machine, count)
    return { result: pinged, coordinatorRttMs: await c.coordinatorRtt() }
  })
  const summary = summarise(result.probes)
  output(flag(p, 'json'), { ...result, summary, coordinatorRttMs }, () =>
    describePing(result, summary, coordinatorRttMs),
  )
  return summary.received > 0 ? 0 : 1
}
