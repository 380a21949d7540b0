// Shared by the dashboard's modules: the page's state, DOM and fetch helpers, formatting.

export const $ = (selector) => document.querySelector(selector)
export const STATES = [
  'failed',
  'refused',
  'rolling-back',
  'rolled-back',
  'downloading',
  'verified',
  'waiting-for-window',
  'activating',
  'confirming',
  'committed',
  'idle',
]
export const BUSY = new Set(['downloading', 'verified', 'activating', 'confirming', 'rolling-back'])
export const COLUMNS = [
  'name',
  'tags',
  'online',
  'path',
  'currentGeneration',
  'desiredGeneration',
  'state',
  'lastSeen',
  'agentVersion',
]

export const ui = {
  session: null,
  /** name → { tr, cells, m, text } */
  rows: new Map(),
  sort: { key: 'name', dir: 1 },
  filter: [],
  selected: null,
  /** machine events waiting for the next frame */
  pending: new Map(),
  frame: 0,
  rollouts: [],
  view: 'machines',
  auditLoaded: false,
}
// Figures the benchmark and the tests read: when the table first held the whole fleet, events applied.
// `events`: machine events received; `shown`: how many of them the table shows (it applies them per frame).
window.fmTimings = { firstTable: null, rows: 0, events: 0, shown: 0 }

// ---------------------------------------------------------------- helpers

export function el(tag, className, text) {
  const node = document.createElement(tag)
  if (className) node.className = className
  if (text !== undefined) node.textContent = text
  return node
}

export async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { accept: 'application/json', ...options.headers } })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(body.error?.message ?? `${res.status} ${res.statusText}`)
  return body
}

export function ago(ms) {
  if (ms === null || ms === undefined) return 'never'
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86400)}d ago`
}

/** Local time as 2026-11-30 06:36:54: sortable, and the same width on every row. */
export function time(ms) {
  if (!ms) return '–'
  const d = new Date(ms)
  const two = (n) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
}
export const short = (id) => (id ? id.slice(0, 8) : '–')

/** The connection path with its transport ("direct quic"); a coordinator older than that sends no transport. */
export const pathText = (m) => (m.path && m.transport ? `${m.path} ${m.transport}` : m.path)

export function statePill(m) {
  const state = m.state ?? 'none'
  const box = el('span', 'state')
  box.append(el('span', `pill s-${state}`, m.state ?? 'no report'))
  if (m.progress && m.progress.total > 0 && BUSY.has(state)) {
    const bar = el('span', 'bar')
    const fill = el('i', 'fill')
    fill.style.width = `${Math.min(100, Math.round((m.progress.done / m.progress.total) * 100))}%`
    bar.append(fill)
    bar.title = `${m.progress.done} / ${m.progress.total}`
    box.append(bar)
  }
  if (m.rebootRequired) box.append(el('span', 'muted small', 'reboot'))
  if (m.error) box.title = `${m.error.code}: ${m.error.message}`
  return box
}
