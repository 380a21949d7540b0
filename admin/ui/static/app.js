// The fleetmesh dashboard: plain DOM, no framework. One server-sent event
// stream (/api/events) feeds the machine table; each event updates only its
// own row, and events are applied in batches, once per animation frame, so a
// burst of a thousand reports costs one layout. Everything else is fetched on
// demand (a machine's log, history and diagnosis; the audit log).

import { runDoctor, select } from './detail.js'
import { $, ago, api, ui } from './dom.js'
import { loadAudit, openDeploy, renderRollouts, submitDeploy } from './panels.js'
import { applyFilter, applyOrder, applySnapshot, parseFilter, queueMachine, summarize } from './table.js'

function showLink(link) {
  const box = $('#link')
  box.className = `link ${link.state}`
  const banner = $('#banner')
  const words = { connecting: 'connecting', live: 'live', lost: 'unreachable', refused: 'refused' }
  box.lastElementChild.textContent = words[link.state] ?? link.state
  if (link.state === 'lost') {
    banner.hidden = false
    banner.textContent = `Coordinator unreachable, retrying in ${(link.retryInMs / 1000).toFixed(1)} s (attempt ${link.attempt}): ${link.reason}. What is shown may be out of date.`
  } else if (link.state === 'refused') {
    banner.hidden = false
    banner.textContent = link.reason
  } else banner.hidden = true
}

function connect() {
  const source = new EventSource('/api/events')
  source.addEventListener('link', (e) => showLink(JSON.parse(e.data)))
  source.addEventListener('snapshot', (e) => applySnapshot(JSON.parse(e.data).machines))
  source.addEventListener('machine', (e) => queueMachine(JSON.parse(e.data)))
  source.addEventListener('rollouts', (e) => {
    ui.rollouts = JSON.parse(e.data).rollouts
    renderRollouts()
  })
  source.addEventListener('rollout', (e) => {
    const r = JSON.parse(e.data)
    // in place: the list stays newest first; one not listed yet is the newest
    const known = ui.rollouts.some((x) => x.rolloutId === r.rolloutId)
    ui.rollouts = known ? ui.rollouts.map((x) => (x.rolloutId === r.rolloutId ? r : x)) : [r, ...ui.rollouts]
    renderRollouts()
  })
  source.addEventListener('error', () => {
    if (source.readyState !== EventSource.OPEN) {
      const banner = $('#banner')
      banner.hidden = false
      banner.textContent = 'Lost the dashboard server (was fleetmesh ui stopped?); the browser keeps trying.'
      $('#link').className = 'link lost'
    }
  })
}

// ---------------------------------------------------------------- wiring

function showView(view) {
  ui.view = view
  for (const tab of document.querySelectorAll('.tab'))
    tab.classList.toggle('active', tab.dataset.view === view)
  for (const name of ['machines', 'rollouts', 'audit']) $(`#view-${name}`).hidden = name !== view
  if (view === 'audit' && !ui.auditLoaded) {
    ui.auditLoaded = true
    void loadAudit()
  }
}

function sortBy(key) {
  ui.sort = { key, dir: ui.sort.key === key ? -ui.sort.dir : 1 }
  for (const th of document.querySelectorAll('#machines th[data-sort]')) {
    th.classList.toggle('asc', th.dataset.sort === key && ui.sort.dir === 1)
    th.classList.toggle('desc', th.dataset.sort === key && ui.sort.dir === -1)
  }
  applyOrder()
}

async function start() {
  for (const tab of document.querySelectorAll('.tab'))
    tab.addEventListener('click', () => showView(tab.dataset.view))
  for (const th of document.querySelectorAll('#machines th[data-sort]'))
    th.addEventListener('click', () => sortBy(th.dataset.sort))
  $('#machines th[data-sort="name"]').classList.add('asc')
  $('#filter').addEventListener('input', (e) => {
    ui.filter = parseFilter(e.target.value)
    applyFilter()
    summarize()
  })
  $('#machines tbody').addEventListener('click', (e) => {
    const tr = e.target.closest('tr')
    if (tr) select(tr.dataset.machine)
  })
  $('#detail-close').addEventListener('click', () => {
    ui.rows.get(ui.selected)?.tr.classList.remove('selected')
    ui.selected = null
    $('#detail').hidden = true
  })
  $('#doctor-run').addEventListener('click', runDoctor)
  $('#audit-refresh').addEventListener('click', loadAudit)
  $('#deploy-open').addEventListener('click', openDeploy)
  $('#deploy-cancel').addEventListener('click', () => $('#deploy-dialog').close())
  $('#deploy-form').addEventListener('submit', submitDeploy)
  // offline rows say how long ago; a local clock, not a request
  setInterval(() => {
    for (const row of ui.rows.values())
      if (!row.m.online) row.cells.lastSeen.textContent = ago(row.m.lastSeen)
  }, 30_000)

  // who we act as first: the rollouts' buttons depend on it
  const session = await api('/api/session')
  ui.session = session
  $('#fleet').textContent = session.fleetId
  $('#admin').textContent = session.admin
  const role = $('#role')
  role.textContent = session.canDeploy ? 'can deploy' : 'read-only'
  role.classList.toggle('deploy', session.canDeploy)
  role.title = `capabilities: ${session.capabilities.join(', ')}`
  $('#deploy-open').hidden = !session.canDeploy
  connect()
}

void start()
