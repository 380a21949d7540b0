/**
 * `fleetmesh ui` in a real browser: a real coordinator and agents, the
 * dashboard as a child process, Debian's chromium. The page shows the
 * machines, follows a deploy made from the command line without a reload,
 * opens a machine's log, deploys itself, says when the coordinator is gone; a
 * read-only admin's page offers no deploy and its server refuses one; the
 * server refuses requests without the token, with a foreign Host header, or
 * (for actions) from another origin. Screenshots go to .tmp/screenshots/.
 */
import { mkdir } from 'node:fs/promises'
import { request } from 'node:http'
import { join, resolve } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { chromiumMissing, launchChromium, type RunningUi, startUi } from '../../testkit/dashboard.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { grantAdmin } from '../coordinator/scoped-admin.ts'

const SCREENSHOTS = resolve(import.meta.dirname, '../../.tmp/screenshots')

let fleet: TestFleet
let admin: RunningUi
let viewer: RunningUi
let prodOnly: RunningUi
let browser: Browser
/** Uncaught errors in any page: each test ends with none. */
const pageErrors: string[] = []

beforeAll(async () => {
  if (chromiumMissing) return
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  await fleet.enrollAgent('edge-1', ['lab'])
  await fleet.enrollAgent('edge-2', ['lab'])
  await fleet.enrollAgent('edge-3', ['prod'])
  const readOnly = await grantAdmin(fleet, 'viewer', ['--caps', 'read', '--all'])
  const prod = await grantAdmin(fleet, 'prod-viewer', ['--caps', 'read', '--tags', 'prod'])
  ;[admin, viewer, prodOnly, browser] = await Promise.all([
    startUi(fleet.home),
    startUi(readOnly.home),
    startUi(prod.home),
    launchChromium(),
    mkdir(SCREENSHOTS, { recursive: true }),
  ])
  fleet.procs.push(admin.proc, viewer.proc, prodOnly.proc)
}, 120_000)

afterEach(() => {
  expect(pageErrors.splice(0)).toEqual([])
})

afterAll(async () => {
  await browser?.close()
  await fleet?.stop()
})

/** A page logged in with the URL `fleetmesh ui` printed, at 1400×800, in light or dark. */
async function open(ui: RunningUi, colorScheme: 'light' | 'dark' = 'light'): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 800 }, colorScheme })
  page.on('pageerror', (err) => pageErrors.push(err.message))
  await page.goto(ui.url)
  return page
}

const cell = (page: Page, machine: string, col: string, text: string) =>
  page.locator(`tr[data-machine="${machine}"] td[data-col="${col}"]`, { hasText: text })

/** A raw request to the dashboard with exactly these headers (no browser adding its own). */
function raw(
  ui: RunningUi,
  method: string,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const { port } = new URL(ui.origin)
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => {
        body += d.toString()
      })
      res.on('end', () => done({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', fail)
    req.end()
  })
}

describe.skipIf(chromiumMissing !== undefined)(`fleetmesh ui (${chromiumMissing ?? 'chromium'})`, () => {
  it('refuses requests without the token, with a foreign Host header, or from another origin', async () => {
    const host = new URL(admin.origin).host
    const token = { 'x-fleetmesh-token': admin.token }
    expect((await raw(admin, 'GET', '/api/session', { host, ...token })).status).toBe(200)
    expect((await raw(admin, 'GET', '/api/machines', { host })).status).toBe(403)
    expect((await raw(admin, 'GET', '/', { host })).status).toBe(403)
    expect((await raw(admin, 'GET', '/?token=wrong', { host })).status).toBe(403)
    const rebound = await raw(admin, 'GET', '/api/session', { host: 'fleet.example.com', ...token })
    expect(rebound.status).toBe(403)
    expect(rebound.body).toContain('not this dashboard')
    const first = await raw(admin, 'GET', `/?token=${admin.token}`, { host })
    expect(first.status).toBe(303)
    const cookie = { cookie: `fleetmesh_ui_${new URL(admin.origin).port}=${admin.token}` }
    const forged = await raw(admin, 'POST', '/api/deploy?to=all', {
      host,
      ...cookie,
      origin: 'http://attacker.example',
    })
    expect(forged.status).toBe(403)
    expect(forged.body).toContain('origin')
  })

  it('shows the machines and follows a deploy from the command line live', async () => {
    const page = await open(admin)
    await cell(page, 'edge-3', 'online', 'online').waitFor()
    expect(await page.locator('#machines tbody tr').count()).toBe(3)
    await cell(page, 'edge-1', 'agentVersion', 'fleetmesh-agent/').waitFor()
    await cell(page, 'edge-1', 'path', 'direct tcp').waitFor() // the fleet file names a TCP address only
    await page.locator('#role', { hasText: 'can deploy' }).waitFor()
    await page.screenshot({ path: join(SCREENSHOTS, 'machines.png') })
    // A reload would lose this mark: the change must arrive over the event stream.
    await page.evaluate(() => Object.assign(globalThis, { notReloaded: true }))

    const archive = await makeArchive(fleet.dir, { version: '1', activate: 'echo "activating web-1"' })
    const deploy = await fleet.deploy(archive, 'tag:lab', 'web-1')
    expect(deploy.code, deploy.stderr).toBe(0)
    await cell(page, 'edge-1', 'currentGeneration', 'web-1').waitFor()
    await cell(page, 'edge-2', 'state', 'committed').waitFor()
    expect(await cell(page, 'edge-3', 'currentGeneration', 'web-1').count()).toBe(0)
    expect(await page.evaluate(() => 'notReloaded' in globalThis)).toBe(true)

    await page.locator('tr[data-machine="edge-1"]').click()
    await page.locator('#log', { hasText: 'activating web-1' }).waitFor()
    await page.locator('#history tbody tr', { hasText: 'committed' }).first().waitFor()
    await page.locator('#doctor-run').click()
    await page.locator('#doctor dd', { hasText: 'direct' }).first().waitFor()
    await page.locator('#doctor dt', { hasText: 'NAT type' }).waitFor()
    await page.screenshot({ path: join(SCREENSHOTS, 'machine-detail.png') })

    await page.locator('#filter').fill('tag:prod')
    await page.locator('tr[data-machine="edge-1"]').waitFor({ state: 'hidden' })
    expect(await page.locator('#machines tbody tr:not([hidden])').count()).toBe(1)
    await page.close()
  }, 120_000)

  it('deploys an uploaded archive from the page, signed by the CLI process', async () => {
    const page = await open(admin)
    await cell(page, 'edge-1', 'currentGeneration', 'web-1').waitFor()
    const archive = await makeArchive(fleet.dir, { version: '2' })
    await page.locator('#deploy-open').click()
    await page.locator('#deploy-file').setInputFiles(archive)
    await page.locator('#deploy-to').fill('tag:lab')
    await page.locator('#deploy-generation').fill('web-2')
    await page.screenshot({ path: join(SCREENSHOTS, 'deploy-dialog.png') })
    await page.locator('#deploy-submit').click()
    await page.locator('#deploy-result.ok').waitFor()
    await page.locator('#deploy-cancel').click()
    await cell(page, 'edge-1', 'currentGeneration', 'web-2').waitFor()
    await cell(page, 'edge-2', 'currentGeneration', 'web-2').waitFor()

    await page.locator('.tab[data-view="audit"]').click()
    await page.locator('#audit-verdict.ok', { hasText: 'verified' }).waitFor()
    await page.locator('#audit tbody tr', { hasText: 'submit-manifest' }).first().waitFor()
    await page.screenshot({ path: join(SCREENSHOTS, 'audit.png') })
    await page.close()
  }, 120_000)

  it('lists rollouts in waves live, and pauses and aborts one', async () => {
    const page = await open(admin)
    await page.locator('.tab[data-view="rollouts"]').click()
    const archive = await makeArchive(fleet.dir, { version: '3' })
    const waves = ['--waves', '1,100%', '--soak', '10m', '--no-watch', '--json']
    const r = await fleet.deploy(archive, 'tag:lab', 'web-3', waves)
    expect(r.code, r.stderr).toBe(0)
    const { rolloutId } = JSON.parse(r.stdout) as { rolloutId: string }
    const row = page.locator(`tr[data-rollout="${rolloutId}"]`)
    await row.locator('td', { hasText: '1 done' }).waitFor()
    await row.locator('button', { hasText: 'pause' }).click()
    await row.locator('td', { hasText: 'paused' }).waitFor()
    await page.screenshot({ path: join(SCREENSHOTS, 'rollouts.png') })
    page.on('dialog', (d) => void d.accept())
    await row.locator('button', { hasText: 'abort' }).click()
    await row.locator('td', { hasText: 'aborted' }).waitFor()
    expect(await row.locator('button').count()).toBe(0)
    await page.close()
  }, 120_000)

  it('gives a read-only admin a page without deploy, and its server refuses one', async () => {
    const page = await open(viewer, 'dark')
    await cell(page, 'edge-3', 'online', 'online').waitFor()
    await page.locator('#role', { hasText: 'read-only' }).waitFor()
    expect(await page.locator('#deploy-open').isVisible()).toBe(false)
    await page.screenshot({ path: join(SCREENSHOTS, 'read-only.png') })
    // the page's own origin and cookie: only the capability is missing
    const refused = await page.evaluate(async () => {
      const res = await fetch('/api/deploy?to=all', { method: 'POST', body: 'not an archive' })
      return { status: res.status, body: (await res.json()) as { error: { code: string } } }
    })
    expect(refused).toMatchObject({ status: 403, body: { error: { code: 'capability-missing' } } })
    await page.close()
  })

  it("shows an admin scoped to a tag only that tag's machines, and no other machine's history", async () => {
    const page = await open(prodOnly)
    await cell(page, 'edge-3', 'online', 'online').waitFor()
    expect(await page.locator('#machines tbody tr').count()).toBe(1)
    const get = (path: string) =>
      raw(prodOnly, 'GET', path, { host: new URL(prodOnly.origin).host, 'x-fleetmesh-token': prodOnly.token })
    const own = await get('/api/machines/edge-3/history')
    expect(own.status).toBe(200)
    expect((JSON.parse(own.body) as { state: string }[]).length).toBeGreaterThan(0)
    const other = await get('/api/machines/edge-1/history')
    expect(other.status).toBe(404)
    expect(JSON.parse(other.body)).toMatchObject({ error: { code: 'unknown-machine' } })
    await page.close()
  })

  it('says when the coordinator is unreachable, and catches up when it is back', async () => {
    const page = await open(admin)
    await page.locator('#link.live').waitFor()
    await fleet.coordinator?.kill('SIGTERM')
    await page.locator('#banner', { hasText: 'Coordinator unreachable, retrying' }).waitFor()
    await page.screenshot({ path: join(SCREENSHOTS, 'unreachable.png') })
    await fleet.startCoordinator()
    await page.locator('#banner').waitFor({ state: 'hidden', timeout: 60_000 })
    await cell(page, 'edge-1', 'online', 'online').waitFor({ timeout: 60_000 })
    await page.close()
  }, 120_000)
})
