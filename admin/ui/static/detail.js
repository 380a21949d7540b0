// One machine: its facts, the log of its last update, its history, and on demand the agent's own
// view of its network (the doctor op).
import { $, ago, api, el, pathText, short, time, ui } from './dom.js'

// ---------------------------------------------------------------- one machine

export function fact(dl, label, value) {
  dl.append(el('dt', '', label), el('dd', '', value))
}

export function showFacts(m) {
  const detail = $('#detail')
  detail.dataset.state = m.state ?? ''
  $('#detail-name').textContent = m.name
  const dl = $('#detail-facts')
  dl.replaceChildren()
  fact(dl, 'online', m.online ? `yes, ${pathText(m) ?? 'path unknown'}` : `no, last seen ${ago(m.lastSeen)}`)
  fact(dl, 'tags', m.tags.join(', ') || '–')
  fact(
    dl,
    'update',
    `${m.state ?? 'no report'}${m.progress ? ` (${m.progress.done}/${m.progress.total})` : ''}`,
  )
  fact(dl, 'current', m.currentGeneration ?? '–')
  fact(dl, 'desired', m.desiredGeneration ?? '–')
  fact(dl, 'rollout', short(m.desiredRolloutId))
  if (m.error) fact(dl, 'error', `${m.error.code}: ${m.error.message}`)
  fact(dl, 'agent', m.agentVersion ?? '–')
  fact(dl, 'peer id', m.peerId)
  fact(dl, 'enrolled', time(m.enrolledAt))
  fact(dl, 'reported', time(m.reportedAt))
}

export async function loadLog(name) {
  const [log, history] = await Promise.allSettled([
    api(`/api/machines/${encodeURIComponent(name)}/log`),
    api(`/api/machines/${encodeURIComponent(name)}/history`),
  ])
  if (ui.selected !== name) return
  if (log.status === 'fulfilled') {
    const l = log.value
    $('#log-meta').textContent = l.reportedAt
      ? `${l.state} · ${l.generation ?? ''} · ${time(l.reportedAt)}${l.error ? ` · ${l.error.code}: ${l.error.message}` : ''}`
      : 'no update reported yet'
    $('#log').textContent = l.log ?? (l.error ? l.error.message : '(no output)')
  } else $('#log').textContent = `could not load the log: ${log.reason.message}`
  const tbody = $('#history tbody')
  if (history.status === 'fulfilled')
    tbody.replaceChildren(
      ...history.value.map((h) => {
        const tr = el('tr')
        tr.append(
          el('td', 'muted', String(h.seq)),
          el('td', '', time(h.reportedAt)),
          el('td', `s-${h.state}`, h.state),
          el('td', '', h.desiredGeneration ?? h.currentGeneration ?? '–'),
          el('td', 'muted', h.error ? `${h.error.code}: ${h.error.message}` : ''),
        )
        return tr
      }),
    )
  else tbody.replaceChildren()
}

export function select(name) {
  const row = ui.rows.get(name)
  if (!row) return
  ui.rows.get(ui.selected)?.tr.classList.remove('selected')
  ui.selected = name
  row.tr.classList.add('selected')
  $('#detail').hidden = false
  $('#doctor').hidden = true
  $('#log').textContent = 'loading…'
  $('#log-meta').textContent = ''
  showFacts(row.m)
  void loadLog(name)
}

export async function runDoctor() {
  const name = ui.selected
  const dl = $('#doctor')
  const button = $('#doctor-run')
  button.disabled = true
  dl.hidden = false
  dl.replaceChildren(el('dt', '', 'asking'), el('dd', '', `${name}…`))
  try {
    const d = await api(`/api/machines/${encodeURIComponent(name)}/doctor`)
    if (ui.selected !== name) return
    dl.replaceChildren()
    const snap = d.diagnosis.snapshot
    fact(dl, 'path', d.path)
    fact(dl, 'seen from', d.remoteAddr)
    fact(dl, 'software', d.software)
    const relayed = snap.connections.filter((c) => c.relayed).length
    fact(dl, 'connections', `${snap.connections.length} (${relayed} relayed)`)
    fact(dl, 'listening', snap.listen.join('\n') || 'none (agents dial out)')
    fact(dl, 'advertised', snap.advertised.join('\n') || '–')
    fact(dl, 'interfaces', d.diagnosis.interfaces.map((i) => `${i.name} ${i.address}`).join('\n') || '–')
    const { holePunch, ...details } = snap.details
    // hole punching's view of the NAT (net/holepunch): only agents run with --observers probe it
    if (holePunch) {
      const seen = holePunch.observed
        ? ` (external ${holePunch.observed.address}:${holePunch.observed.port})`
        : ''
      fact(dl, 'NAT type', `${holePunch.natKind}${seen}`)
      const punches = Object.values(holePunch.attempts ?? {})
      if (punches.length > 0) fact(dl, 'hole punches', JSON.stringify(punches))
    } else fact(dl, 'NAT type', 'not probed (the agent runs without --observers)')
    for (const [key, value] of Object.entries(details)) fact(dl, key, JSON.stringify(value))
  } catch (err) {
    dl.replaceChildren(el('dt', '', 'failed'), el('dd', 's-failed', err.message))
  } finally {
    button.disabled = false
  }
}
