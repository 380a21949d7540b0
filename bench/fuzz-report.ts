/** What bench/fuzz.ts found, as one object (`--json`) and as the printed figures. */
import type { Snapshot } from './coordinator-child.ts'
import { FUZZ_KINDS, type FuzzKind } from './fuzz-frames.ts'
import type { HonestDeploy } from './fuzz-honest.ts'
import { OUTCOMES, type Outcome } from './fuzz-peer.ts'
import { FUZZ_PROTOCOLS, type FuzzProtocol } from './fuzz-seeds.ts'
import type { AuditGrowth } from './fuzz-store.ts'
import { fmt, line } from './measure.ts'

export interface Crash {
  at: string
  code: number | null
  signal: string | null
  /** The tail of the coordinator's stderr: the stack */
  stderr: string[]
  /** Where the plans sent just before were written */
  file: string
}

export interface FuzzReport {
  frames: {
    total: number
    /** What --frames asked for; more than `total` when --minutes stopped the run first */
    planned: number
    stoppedAtTimeLimit: boolean
    seconds: number
    perSecond: number
    streams: number
    /** CPU used while fuzzing by the coordinator and by the fuzzing process (the peers) */
    cpuSeconds: { coordinator: number; fuzzer: number }
    byProtocol: Record<FuzzProtocol, Record<FuzzKind, number>>
  }
  streams: Record<FuzzProtocol, Record<Outcome, number>>
  /** `<protocol> <code>` of the coordinator's answers */
  answers: Record<string, number>
  openErrors: Record<string, number>
  peers: { identities: number; dialFailures: number; connectionsLost: number }
  coordinator: {
    crashes: Crash[]
    /** Its framed-stream error counters (since its last start) */
    frameErrors: Snapshot
    rssBytes: { before: number; peak: number; final: number }
    /** Forced-GC snapshots before the fuzzing and 15 s after it ended */
    afterGc: { before: Snapshot; after: Snapshot }
  }
  store: { logicalBytes: { before: number; after: number }; fileBytesAfter: number; audit: AuditGrowth }
  honest: {
    baselineMs: number
    ok: number
    total: number
    p50Ms: number
    maxMs: number
    failed: HonestDeploy[]
    /** How often the agent's control link came up again */
    agentReconnects: number
  }
  auditVerify: { ok: boolean; output?: string }
  pass: boolean
}

const MB = 2 ** 20
const sum = (row: Record<string, number>) => Object.values(row).reduce((a, b) => a + b, 0)

function grid(title: string, columns: readonly string[], rows: [string, Record<string, number>][]): void {
  const width = Math.max(9, ...columns.map((c) => c.length + 1))
  const cell = (s: string) => s.padStart(width)
  console.log(`  ${title.padEnd(10)}${columns.map(cell).join('')}${cell('total')}`)
  for (const [name, row] of rows)
    console.log(
      `  ${name.padEnd(10)}${columns.map((c) => cell(fmt(row[c] ?? 0))).join('')}${cell(fmt(sum(row)))}`,
    )
}

const top = (counts: Record<string, number>, n = 12) =>
  Object.entries(counts)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)

export function printReport(r: FuzzReport): void {
  const { frames, coordinator: c, store, honest } = r
  if (frames.stoppedAtTimeLimit)
    line('stopped at the --minutes limit', `${fmt(frames.total)} of ${fmt(frames.planned)} frames sent`)
  line(
    'frames sent',
    `${fmt(frames.total)} in ${fmt(frames.seconds)} s: ${fmt(frames.perSecond)} frames/s ` +
      `(${fmt(frames.streams / frames.seconds)} streams/s, ${fmt(frames.total / frames.streams, 2)} frames/stream)`,
  )
  line(
    'CPU while fuzzing: coordinator / fuzzing peers',
    `${fmt(frames.cpuSeconds.coordinator, 1)} / ${fmt(frames.cpuSeconds.fuzzer, 1)} s ` +
      `(coordinator ${fmt((frames.cpuSeconds.coordinator / frames.total) * 1e6)} µs per frame)`,
  )
  grid(
    'frames',
    FUZZ_KINDS,
    FUZZ_PROTOCOLS.map((p) => [p, frames.byProtocol[p]]),
  )
  grid(
    'streams',
    OUTCOMES,
    FUZZ_PROTOCOLS.map((p) => [p, r.streams[p]]),
  )
  console.log('  coordinator answers (protocol code: streams)')
  for (const [what, n] of top(r.answers)) console.log(`    ${what.padEnd(54)} ${fmt(n)}`)
  line(
    'fuzzing identities / failed dials / connections lost',
    `${fmt(r.peers.identities)} / ${fmt(r.peers.dialFailures)} / ${fmt(r.peers.connectionsLost)}`,
  )
  const opens = top(r.openErrors, 4).map(([name, n]) => `${name} ${fmt(n)}`)
  if (opens.length > 0) line('streams refused at open, by error', opens.join(', '))
  line('coordinator crashes (goal 0)', fmt(c.crashes.length))
  for (const crash of c.crashes)
    console.log(
      `    ${crash.at} exit ${crash.code ?? crash.signal}, frames before it: ${crash.file}\n      ${crash.stderr.slice(-8).join('\n      ')}`,
    )
  const { before, peak, final } = c.rssBytes
  line(
    'coordinator RSS before / peak / final',
    `${fmt(before / MB)} / ${fmt(peak / MB)} / ${fmt(final / MB)} MB (peak ${fmt(peak / before, 2)}× before)`,
  )
  const keys = Object.keys(c.afterGc.before)
  line(
    'after forced GC, before → 15 s after the end',
    keys.map((k) => `${k} ${c.afterGc.before[k] ?? '-'} → ${c.afterGc.after[k] ?? '-'}`).join(', '),
  )
  line(
    'coordinator frame errors',
    Object.entries(c.frameErrors)
      .map(([k, n]) => `${k} ${fmt(n ?? 0)}`)
      .join(', '),
  )
  const grown = store.logicalBytes.after - store.logicalBytes.before
  line(
    'fleet.db growth',
    `${fmt(grown)} bytes (${fmt(store.logicalBytes.before)} → ${fmt(store.logicalBytes.after)}; ` +
      `${fmt((grown / frames.total) * 1000, 1)} bytes per 1,000 frames)`,
  )
  line(
    'audit records added (bytes)',
    `${fmt(store.audit.records)} (${fmt(store.audit.bytes)} bytes, ` +
      `${fmt((store.audit.bytes / frames.total) * 1000, 1)} bytes per 1,000 frames)`,
  )
  for (const [what, n] of store.audit.breakdown.slice(0, 12)) console.log(`    ${what.padEnd(54)} ${fmt(n)}`)
  line(
    'honest deploys ok / total, p50 / max',
    `${honest.ok} / ${honest.total}, ${fmt(honest.p50Ms)} / ${fmt(honest.maxMs)} ms ` +
      `(before fuzzing ${fmt(honest.baselineMs)} ms: p50 ${fmt(honest.p50Ms / honest.baselineMs, 2)}×)`,
  )
  for (const f of honest.failed)
    console.log(`    ${f.generation}: ${f.problem}${f.output ? `\n      ${f.output.join('\n      ')}` : ''}`)
  line('honest agent link reconnects', fmt(honest.agentReconnects))
  line('fleetmesh audit --verify', r.auditVerify.ok ? 'passes' : `FAILS\n${r.auditVerify.output}`)
  line('result', r.pass ? 'pass' : 'FAIL')
}
