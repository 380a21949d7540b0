/**
 * What a rollout came to on each machine it targeted, and the exit code and
 * words `watch --rollout` and `deploy` end with. A machine has finished the
 * rollout once it reported a final state for it: committed, or rolled back,
 * failed or refused. It is superseded once its desired state moved on to a
 * newer rollout; superseded before it finished, it never will, so it is no
 * longer waited for. Any other machine is pending.
 */
import type { MachineView, UpdateState } from '../protocol/index.ts'

const FINAL: readonly UpdateState[] = ['committed', 'rolled-back', 'failed', 'refused']

export interface MachineOutcome {
  /** The final state it reported for the rollout, or null while it has none. */
  finished: UpdateState | null
  /** The newer rollout its desired state moved to, or null while it is still this one. */
  supersededBy: string | null
}

export function machineOutcome(m: MachineView, rolloutId: string): MachineOutcome {
  const finished = m.rolloutId === rolloutId && m.state !== null && FINAL.includes(m.state) ? m.state : null
  const supersededBy =
    m.desiredRolloutId !== null && m.desiredRolloutId !== rolloutId ? m.desiredRolloutId : null
  return { finished, supersededBy }
}

export interface RolloutSummary {
  rolloutId: string
  committed: string[]
  notCommitted: { machine: string; state: UpdateState }[]
  /** Every machine a newer rollout took over, with what it had made of this one (null: unfinished). */
  superseded: { machine: string; by: string; finished: UpdateState | null }[]
  pending: string[]
}

/** The outcome on every machine in `targets`, sorted by name; one without a view yet is pending. */
export function summarize(
  rolloutId: string,
  targets: Iterable<string>,
  views: ReadonlyMap<string, MachineView>,
): RolloutSummary {
  const s: RolloutSummary = { rolloutId, committed: [], notCommitted: [], superseded: [], pending: [] }
  for (const machine of [...targets].sort()) {
    const m = views.get(machine)
    if (m === undefined) {
      s.pending.push(machine)
      continue
    }
    const { finished, supersededBy } = machineOutcome(m, rolloutId)
    if (finished === 'committed') s.committed.push(machine)
    else if (finished !== null) s.notCommitted.push({ machine, state: finished })
    if (supersededBy !== null) s.superseded.push({ machine, by: supersededBy, finished })
    else if (finished === null) s.pending.push(machine)
  }
  return s
}

/** Machines a newer rollout took over before they finished this one. */
export const unfinished = (s: RolloutSummary) => s.superseded.filter((x) => x.finished === null)

/** How `watch --rollout` and `deploy` exit; WATCH_EXIT_NOTES says the same for --help. */
export const EXIT = {
  committed: 0,
  notCommitted: 1,
  timedOut: 2,
  superseded: 3,
  noMachines: 4,
  halted: 5,
} as const

export const WATCH_EXIT_NOTES = [
  'exit codes with --rollout (deploy exits the same way):',
  '  0  every machine committed the rollout',
  '  1  some machine rolled it back, failed or refused it (or the command failed)',
  '  2  the --timeout passed first; the rollout goes on (2 is also what a usage error exits with)',
  '  3  none failed, but a newer rollout superseded it on some machines before they finished it',
  '  4  no machine you can see is part of the rollout (check the id; deploy: it was not stored)',
  '  5  a rollout in waves (deploy --waves) halted or was aborted; the reason is printed',
]

export function exitCode(s: RolloutSummary): number {
  if (s.notCommitted.length > 0) return EXIT.notCommitted
  if (unfinished(s).length > 0) return EXIT.superseded
  return EXIT.committed
}

/** "superseded by rollout <id>: edge-2 (unfinished), edge-1 (committed first)", one line per newer rollout. */
export function supersededLines(superseded: RolloutSummary['superseded']): string[] {
  const byRollout = new Map<string, string[]>()
  for (const { machine, by, finished } of superseded)
    byRollout.set(by, [
      ...(byRollout.get(by) ?? []),
      `${machine} (${finished === null ? 'unfinished' : `${finished} first`})`,
    ])
  return [...byRollout].map(([by, machines]) => `superseded by rollout ${by}: ${machines.join(', ')}`)
}

/** The lines a settled rollout ends with, before the machines table. */
export function settledText(s: RolloutSummary): string {
  const lines = [
    `rollout ${s.rolloutId} settled: ${s.committed.length} committed, ${s.notCommitted.length} not committed, ` +
      `${unfinished(s).length} superseded before finishing`,
  ]
  if (s.notCommitted.length > 0)
    lines.push(`not committed: ${s.notCommitted.map((n) => `${n.machine} (${n.state})`).join(', ')}`)
  lines.push(...supersededLines(s.superseded))
  return lines.join('\n')
}
