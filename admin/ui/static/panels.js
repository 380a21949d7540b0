// The rollouts and audit views, and the deploy dialog.
import { $, api, el, short, time, ui } from './dom.js'

// ---------------------------------------------------------------- rollouts

export function renderRollouts() {
  const tbody = $('#rollouts tbody')
  $('#rollouts-empty').hidden = ui.rollouts.length > 0
  tbody.replaceChildren(
    ...ui.rollouts.map((r) => {
      const tr = el('tr')
      tr.dataset.rollout = r.rolloutId
      const counts = el('td', 'counts')
      for (const [outcome, n] of Object.entries(r.counts))
        if (n > 0) counts.append(el('span', `o-${outcome}`, `${n} ${outcome}`))
      const actions = el('td')
      if (ui.session?.canDeploy) {
        const live = r.state === 'running' || r.state === 'paused'
        if (r.state === 'running') actions.append(actionButton(r, 'pause'))
        if (r.state === 'paused') actions.append(actionButton(r, 'resume'))
        if (live) actions.append(actionButton(r, 'abort'))
      }
      tr.append(
        el('td', 'mono', short(r.rolloutId)),
        el('td', '', r.generation),
        el('td', `r-${r.state}`, r.state),
        el('td', '', `${Math.min(r.wave + 1, r.waves)} of ${r.waves}`),
        counts,
        el('td', 'muted', time(r.createdAt)),
        actions,
      )
      if (r.reason) tr.title = r.reason
      return tr
    }),
  )
}

export function actionButton(r, action) {
  const button = el('button', action === 'abort' ? 'danger' : '', action)
  button.type = 'button'
  button.addEventListener('click', async () => {
    if (
      action === 'abort' &&
      !confirm(`Abort rollout ${short(r.rolloutId)}? Machines not yet reached keep what they run.`)
    )
      return
    button.disabled = true
    try {
      const view = await api(`/api/rollouts/${r.rolloutId}/${action}`, { method: 'POST' })
      ui.rollouts = ui.rollouts.map((x) => (x.rolloutId === view.rolloutId ? view : x))
      renderRollouts()
    } catch (err) {
      alert(err.message)
      button.disabled = false
    }
  })
  return button
}

// ---------------------------------------------------------------- audit

export async function loadAudit() {
  const verdict = $('#audit-verdict')
  verdict.className = 'verdict'
  verdict.textContent = 'verifying the hash chain and every signature…'
  try {
    const a = await api('/api/audit')
    const v = a.verified
    verdict.className = `verdict ${v.ok ? 'ok' : 'bad'}`
    verdict.textContent = v.ok
      ? `✓ verified: ${v.count} records, hash chain intact, every signature valid`
      : `✗ AUDIT LOG INVALID at record ${v.index}: ${v.problem}`
    $('#audit tbody').replaceChildren(
      ...a.records.map((r) => {
        const tr = el('tr')
        tr.append(
          el('td', 'muted', String(r.index)),
          el('td', '', time(r.at)),
          el('td', `o-${r.outcome}`, r.outcome),
          el('td', 'mono', r.action),
          el('td', '', r.actor),
          el('td', 'muted', r.detail),
        )
        return tr
      }),
    )
  } catch (err) {
    verdict.className = 'verdict bad'
    verdict.textContent = `could not read the audit log: ${err.message}`
  }
}

// ---------------------------------------------------------------- deploy

export function openDeploy() {
  $('#deploy-result').textContent = ''
  $('#deploy-result').className = 'small'
  $('#deploy-dialog').showModal()
}

export async function submitDeploy(event) {
  event.preventDefault()
  const file = $('#deploy-file').files[0]
  if (!file) return
  const q = new URLSearchParams({ to: $('#deploy-to').value.trim(), name: file.name })
  const generation = $('#deploy-generation').value.trim()
  const health = $('#deploy-health').value.trim()
  if (generation) q.set('generation', generation)
  if (health) q.set('health-check', health)
  const result = $('#deploy-result')
  const submit = $('#deploy-submit')
  submit.disabled = true
  result.className = 'small'
  result.textContent = `uploading ${file.name} (${file.size} bytes), signing, submitting…`
  try {
    const r = await api(`/api/deploy?${q}`, {
      method: 'POST',
      body: file,
      headers: { 'content-type': 'application/octet-stream' },
    })
    result.className = 'small ok'
    result.textContent = `rollout ${short(r.rolloutId)} submitted: ${r.generation} → ${r.machines.length} machine(s). The table follows it live.`
  } catch (err) {
    result.className = 'small bad'
    result.textContent = err.message
  } finally {
    submit.disabled = false
  }
}
