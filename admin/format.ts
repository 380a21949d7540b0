/**
 * Text views of machines, shared by the commands that print them. Each takes
 * the width to fit (lib's terminalWidth() where the command prints to a
 * terminal); the default, no limit, keeps every value whole.
 */
import { type Cut, shorten, table } from '../lib/index.ts'
import type { MachineView } from '../protocol/index.ts'

export function ago(ms: number | null): string {
  if (ms === null) return '-'
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

/**
 * Whether the machine reported that its update takes effect only after a
 * reboot (NixOS `boot` mode). Read defensively: views from coordinators that
 * do not report it lack the field.
 */
export function rebootRequired(m: Pick<MachineView, 'rebootRequired'>): boolean {
  return m.rebootRequired
}

/**
 * The state with what qualifies it: the error code, a pending reboot, and
 * `offline` — a machine's last report says nothing about whether it is still up.
 */
function stateText(m: MachineView): string {
  if (m.state === null) return m.online ? '-' : '- (offline)'
  const notes = [
    ...(m.error ? [m.error.code] : []),
    ...(rebootRequired(m) ? ['reboot required'] : []),
    ...(m.online ? [] : ['offline']),
  ]
  return notes.length > 0 ? `${m.state} (${notes.join(', ')})` : m.state
}

/** The connection path and its transport ("direct quic"), only while connected: an offline machine has none. */
function pathText(m: MachineView): string {
  if (!m.online || m.path === null) return '-'
  return m.transport ? `${m.path} ${m.transport}` : m.path
}

/**
 * What gives way when the machines table is too wide: tags and the state's notes
 * lose their ends, generation names their middle (their tails, often a timestamp,
 * tell them apart). NAME is never cut, so no two rows look alike.
 */
const MACHINES_SHRINK: Record<string, Cut> = {
  TAGS: 'end',
  CURRENT: 'middle',
  DESIRED: 'middle',
  STATE: 'end',
  PATH: 'end',
}

export function machinesTable(machines: readonly MachineView[], width = Number.POSITIVE_INFINITY): string {
  const rows = table(
    ['NAME', 'TAGS', 'ONLINE', 'CURRENT', 'DESIRED', 'STATE', 'LAST SEEN', 'PATH'],
    machines.map((m) => [
      m.name,
      m.tags.join(',') || '-',
      m.online ? 'yes' : 'no',
      m.currentGeneration ?? '-',
      m.desiredGeneration ?? '-',
      stateText(m),
      m.online ? 'now' : ago(m.lastSeen),
      pathText(m),
    ]),
    { width, shrink: MACHINES_SHRINK },
  )
  // The table has room for an error's code only; its whole reason follows, one line a machine.
  const reasons = machines
    .filter((m) => m.error)
    .map((m) => `  ${m.name}: ${m.error?.code}: ${m.error?.message}`)
  return reasons.length > 0 ? `${rows}\n\nerrors:\n${reasons.join('\n')}` : rows
}

/**
 * One line: name, update state with progress, current generation, error, pending
 * reboot; cut to `width` with "…" (the error's whole reason is in the final table).
 */
export function machineLine(m: MachineView, width = Number.POSITIVE_INFINITY): string {
  const pct =
    m.progress && m.progress.total > 0 ? ` ${Math.round((m.progress.done / m.progress.total) * 100)}%` : ''
  const err = m.error ? ` — ${m.error.code}: ${m.error.message}` : ''
  const reboot = rebootRequired(m) ? ' — reboot required' : ''
  const offline = m.online ? '' : ' (offline)'
  return shorten(
    `${m.name.padEnd(20)} ${(m.state ?? '-') + pct}${offline}${m.currentGeneration ? ` (on ${m.currentGeneration})` : ''}${reboot}${err}`,
    width,
  )
}

/**
 * `text` in at most `max` characters: whole if it fits, else cut at the last
 * word boundary (a space) that leaves room for "…", or mid-word only when a
 * single word is longer than the room.
 */
export function truncateAtWord(text: string, max: number): string {
  if (text.length <= max) return text
  const room = max - 1
  const cut = text.lastIndexOf(' ', room)
  const head = cut > room / 2 ? text.slice(0, cut) : text.slice(0, room)
  return `${head.replace(/[\s,;:]+$/, '')}…`
}
