// The machine table: one row per machine, keyed by name; an event rewrites only the cells of its row
// that changed, and events are applied once per animation frame.

import { loadLog, showFacts } from './detail.js'
import { $, ago, BUSY, COLUMNS, el, pathText, STATES, statePill, ui } from './dom.js'

// ---------------------------------------------------------------- machine rows

export function makeRow(m) {
  const tr = el('tr')
  tr.dataset.machine = m.name
  const cells = {}
  for (const col of COLUMNS) {
    const td = el('td')
    td.dataset.col = col
    cells[col] = td
    tr.append(td)
  }
  cells.name.className = 'name'
  cells.agentVersion.className = 'mono muted'
  const row = { tr, cells, m: null, text: '' }
  renderRow(row, m)
  return row
}

/** Writes only the cells whose value changed. */
export function renderRow(row, m) {
  const p = row.m
  const { cells } = row
  row.m = m
  if (!p || p.tags.join() !== m.tags.join())
    cells.tags.replaceChildren(...m.tags.map((t) => el('span', 'tag', t)))
  if (!p || p.online !== m.online) {
    cells.online.replaceChildren(el('span', m.online ? 'dot on' : 'dot'), m.online ? 'online' : 'offline')
    row.tr.classList.toggle('offline', !m.online)
  }
  if (!p) cells.name.textContent = m.name
  if (!p || p.path !== m.path || p.transport !== m.transport) cells.path.textContent = pathText(m) ?? '–'
  if (!p || p.currentGeneration !== m.currentGeneration || p.desiredGeneration !== m.desiredGeneration) {
    cells.currentGeneration.textContent = m.currentGeneration ?? '–'
    cells.desiredGeneration.textContent = m.desiredGeneration ?? '–'
    const behind = m.desiredGeneration !== null && m.currentGeneration !== m.desiredGeneration
    cells.currentGeneration.classList.toggle('outdated', behind)
  }
  if (
    !p ||
    p.state !== m.state ||
    p.progress?.done !== m.progress?.done ||
    p.progress?.total !== m.progress?.total ||
    p.error?.code !== m.error?.code ||
    p.rebootRequired !== m.rebootRequired
  )
    cells.state.replaceChildren(statePill(m))
  if (!p || p.lastSeen !== m.lastSeen || p.online !== m.online)
    cells.lastSeen.textContent = m.online ? 'now' : ago(m.lastSeen)
  if (!p || p.agentVersion !== m.agentVersion) cells.agentVersion.textContent = m.agentVersion ?? '–'
  row.text = [
    m.name,
    ...m.tags,
    m.state ?? '',
    m.currentGeneration ?? '',
    m.desiredGeneration ?? '',
    pathText(m) ?? '',
    m.agentVersion ?? '',
  ]
    .join(' ')
    .toLowerCase()
}

// ---------------------------------------------------------------- filter and sort

export function parseFilter(text) {
  return text
    .toLowerCase()
    .split(/\s+/)
    .filter((w) => w.length > 0)
}

export function matches(row) {
  const m = row.m
  return ui.filter.every((w) => {
    if (w.startsWith('tag:')) return m.tags.some((t) => t.toLowerCase() === w.slice(4))
    if (w.startsWith('state:')) return (m.state ?? 'none').startsWith(w.slice(6))
    if (w.startsWith('path:')) return (m.path ?? '').startsWith(w.slice(5))
    if (w === 'online') return m.online
    if (w === 'offline') return !m.online
    return row.text.includes(w)
  })
}

export function sortValue(m, key) {
  switch (key) {
    case 'tags':
      return m.tags.join(',')
    case 'online':
      return m.online ? 0 : 1
    case 'state':
      return m.state === null ? STATES.length : STATES.indexOf(m.state)
    case 'lastSeen':
      return m.online ? -Date.now() : -(m.lastSeen ?? 0)
    default:
      return m[key] ?? ''
  }
}

export function compareRows(a, b) {
  const { key, dir } = ui.sort
  const x = sortValue(a.m, key)
  const y = sortValue(b.m, key)
  if (x < y) return -dir
  if (x > y) return dir
  return a.m.name < b.m.name ? -1 : a.m.name > b.m.name ? 1 : 0
}

/** Puts rows in sort order, touching the DOM only when the order changed. */
export function applyOrder() {
  const tbody = $('#machines tbody')
  const sorted = [...ui.rows.values()].sort(compareRows)
  const current = tbody.children
  let same = current.length === sorted.length
  for (let i = 0; same && i < sorted.length; i++) same = current[i] === sorted[i].tr
  if (!same) {
    const fragment = document.createDocumentFragment()
    for (const row of sorted) fragment.append(row.tr)
    tbody.append(fragment)
  }
}

export function applyFilter(rows = ui.rows.values()) {
  for (const row of rows) row.tr.hidden = !matches(row)
}

export function summarize() {
  let online = 0
  let committed = 0
  let busy = 0
  let failed = 0
  let shown = 0
  for (const row of ui.rows.values()) {
    const m = row.m
    if (m.online) online++
    if (m.state === 'committed') committed++
    else if (BUSY.has(m.state) || m.state === 'waiting-for-window') busy++
    else if (m.state === 'failed' || m.state === 'refused' || m.state === 'rolled-back') failed++
    if (!row.tr.hidden) shown++
  }
  const parts = [
    ['machines', ui.rows.size],
    ['online', online],
    ['committed', committed],
    ['updating', busy],
    ['failed or rolled back', failed],
  ]
  if (shown !== ui.rows.size) parts.push(['shown', shown])
  $('#summary').replaceChildren(
    ...parts.map(([label, n]) => {
      const span = el('span')
      span.append(el('b', '', String(n)), ` ${label}`)
      return span
    }),
  )
  $('#empty').hidden = shown > 0 || ui.rows.size === 0
}

// ---------------------------------------------------------------- live events

export function applySnapshot(machines) {
  const tbody = $('#machines tbody')
  const seen = new Set()
  const fragment = document.createDocumentFragment()
  for (const m of machines) {
    seen.add(m.name)
    const row = ui.rows.get(m.name)
    if (row) renderRow(row, m)
    else {
      const made = makeRow(m)
      ui.rows.set(m.name, made)
      fragment.append(made.tr)
    }
  }
  for (const [name, row] of ui.rows)
    if (!seen.has(name)) {
      row.tr.remove()
      ui.rows.delete(name)
    }
  tbody.append(fragment)
  ui.pending.clear()
  window.fmTimings.shown = window.fmTimings.events
  applyFilter()
  applyOrder()
  summarize()
  if (ui.selected && ui.rows.has(ui.selected)) showFacts(ui.rows.get(ui.selected).m)
  if (window.fmTimings.firstTable === null && machines.length > 0) {
    // after layout: the next frame is when the table is on screen
    requestAnimationFrame(() => {
      window.fmTimings.firstTable = performance.now()
      window.fmTimings.rows = machines.length
    })
  }
}

export function queueMachine(m) {
  window.fmTimings.events++
  // a machine's newer event replaces its older one still waiting: only the latest is drawn
  ui.pending.set(m.name, m)
  if (ui.frame === 0) ui.frame = requestAnimationFrame(flush)
}

export function flush() {
  ui.frame = 0
  const tbody = $('#machines tbody')
  let reorder = false
  const touched = []
  for (const m of ui.pending.values()) {
    let row = ui.rows.get(m.name)
    if (row) {
      if (sortValue(row.m, ui.sort.key) !== sortValue(m, ui.sort.key)) reorder = true
      renderRow(row, m)
    } else {
      row = makeRow(m)
      ui.rows.set(m.name, row)
      tbody.append(row.tr)
      reorder = true
    }
    touched.push(row)
  }
  window.fmTimings.shown = window.fmTimings.events
  const selected = ui.selected !== null && ui.pending.get(ui.selected)
  ui.pending.clear()
  applyFilter(touched)
  if (reorder) applyOrder()
  summarize()
  if (selected) {
    const before = $('#detail').dataset.state
    showFacts(selected)
    // a settled update has a new log: fetch it once, when the state changes
    if (before !== selected.state) loadLog(selected.name)
  }
}
