/** Text views of machines, shared by the commands that print them. */
import { table } from '../lib/index.ts'
import type { MachineView } from '../protocol/index.ts'

function ago(ms: number | null): string {
  if (ms === null) return '-'
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

export function machinesTable(machines: readonly MachineView[]): string {
  return table(
    ['NAME', 'TAGS', 'ONLINE', 'CURRENT', 'DESIRED', 'STATE', 'LAST SEEN', 'PATH'],
    machines.map((m) => [
      m.name,
      m.tags.join(',') || '-',
      m.online ? 'yes' : 'no',
      m.currentGeneration ?? '-',
      m.desiredGeneration ?? '-',
      m.state === null ? '-' : m.error ? `${m.state} (${m.error.code})` : m.state,
      m.online ? 'now' : ago(m.lastSeen),
      m.path ?? '-',
    ]),
  )
}

/** One line: name, update state with progress, current generation, error. */
export function machineLine(m: MachineView): string {
  const pct =
    m.progress && m.progress.total > 0 ? ` ${Math.round((m.progress.done / m.progress.total) * 100)}%` : ''
  const err = m.error ? ` — ${m.error.code}: ${m.error.message}` : ''
  return `${m.name.padEnd(20)} ${(m.state ?? '-') + pct}${m.currentGeneration ? ` (on ${m.currentGeneration})` : ''}${err}`
}
