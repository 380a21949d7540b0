/**
 * The text `fleetmesh doctor` prints, for a report made here from a state
 * directory (`doctor --state`, doctor.ts) and for a diagnosis an agent sent up
 * its control stream (`doctor <machine>`): one layout, so both read alike.
 */
import { table } from '../lib/index.ts'
import type { DoctorResult } from '../protocol/index.ts'
import type { DoctorReport } from './doctor.ts'
import type { RuntimeSnapshot } from './runtime.ts'
import { addrTransport } from './transports.ts'

/** The parts of a runtime snapshot shown; a snapshot that came over the wire has them too. */
type SnapshotView = Pick<RuntimeSnapshot, 'peerId' | 'listen' | 'advertised' | 'connections' | 'details'>

function interfaceLines(interfaces: readonly { name: string; address: string }[]): string[] {
  return [
    '',
    'interfaces:',
    ...(interfaces.length
      ? interfaces.map((i) => `  ${i.name.padEnd(12)} ${i.address}`)
      : ['  (none besides loopback)']),
  ]
}

/** Addresses, connections and their paths, and the role's details (link state, hole punching). */
function snapshotLines(s: SnapshotView): string[] {
  const out = [
    '',
    `peer id: ${s.peerId}`,
    // agents listen nowhere by default: they only dial out
    ...(s.listen.length > 0
      ? ['listening on:', ...s.listen.map((a) => `  ${a}`)]
      : ['listening on: none (dials out only)']),
  ]
  const relayed = s.advertised.filter((a) => a.includes('/p2p-circuit'))
  out.push(
    'reachable through relays:',
    ...(relayed.length ? relayed.map((a) => `  ${a}`) : ['  (no relay reservation)']),
  )
  if (s.connections.length > 0) {
    out.push(
      '',
      table(
        ['PEER', 'PATH', 'DIRECTION', 'REMOTE ADDRESS'],
        s.connections.map((c) => [
          c.peer.slice(-12),
          // the transport: of the hop to the relay, for a relayed connection
          `${c.relayed ? 'relayed' : 'direct'} ${addrTransport(c.remoteAddr)}`,
          c.direction,
          c.remoteAddr,
        ]),
      ),
    )
  }
  for (const [k, v] of Object.entries(s.details))
    out.push(
      '',
      `${k}:`,
      ...JSON.stringify(v, null, 2)
        .split('\n')
        .map((l) => `  ${l}`),
    )
  return out
}

function natLines(nat: DoctorReport['nat']): string[] {
  const out = ['', 'NAT behaviour (probed now from a fresh port):']
  if (nat === null) {
    out.push('  not probed: no observers known (give --observer <ip:port> of a relay or public coordinator)')
    return out
  }
  out.push(
    `  ${nat.natKind}${nat.observed ? `, seen as ${nat.observed.address}:${nat.observed.port}` : ''}${nat.local ? ` from ${nat.local.address}:${nat.local.port}` : ''}`,
  )
  for (const o of nat.observers)
    out.push(`  observer ${o.observer}: ${o.observed ? `${o.observed.address}:${o.observed.port}` : o.error}`)
  if (nat.natKind === 'symmetric')
    out.push(
      '  symmetric NAT: direct connections to other NATed peers are not possible; traffic goes through the relay',
    )
  return out
}

/** `doctor --state <dir>`: the daemon's last report with the checks run here. */
export function formatDoctorReport(r: DoctorReport): string {
  const s = r.daemon.snapshot
  const out = [
    `${r.role ?? 'unknown role'} in ${r.stateDir}`,
    r.daemon.running
      ? `daemon: running (pid ${s?.pid}, report ${Math.round((r.daemon.ageMs ?? 0) / 1000)} s old)`
      : `daemon: ${r.daemon.problem}`,
    ...interfaceLines(r.interfaces),
    ...(s === null ? [] : snapshotLines(s)),
    ...natLines(r.nat),
  ]
  if (r.coordinator !== null) {
    out.push('', `coordinator ${r.coordinator.peerId}:`)
    for (const c of r.coordinator.reach)
      out.push(`  ${c.addr}: ${c.result}${c.ms !== undefined ? ` (${c.ms} ms)` : ''}`)
  }
  return out.join('\n')
}

/**
 * `doctor <machine>`: what the agent reported of itself just now, and how the
 * coordinator sees its connection. The agent runs no NAT probe for it (that
 * takes seconds); its hole-punching details show what it last found.
 */
export function formatRemoteDoctor(r: DoctorResult): string {
  const d = r.diagnosis
  const out = [
    `${d.snapshot.role} ${r.machine} (${d.software}), asked over its control link`,
    `daemon: running (pid ${d.snapshot.pid})`,
    `the coordinator sees it at ${r.remoteAddr} (${r.path}, ${addrTransport(r.remoteAddr)})`,
    ...interfaceLines(d.interfaces),
    ...snapshotLines(d.snapshot),
    '',
    `NAT behaviour: not probed by a remote doctor; ${
      'holePunch' in d.snapshot.details
        ? '"holePunch" above shows what the agent last observed'
        : 'the agent runs no hole punching (no observers), so it has no observation either'
    }`,
    '',
    `coordinator ${d.coordinator.peerId}, dialed at:`,
    ...(d.coordinator.addrs.length ? d.coordinator.addrs.map((a) => `  ${a}`) : ['  (no known addresses)']),
  ]
  if (d.truncated) out.push('', '(the agent left some connections or details out to keep its answer small)')
  return out.join('\n')
}
