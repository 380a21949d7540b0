/**
 * The dashboard at the scale it promises: a coordinator holding 1,000 machines
 * (seeded into its store as bench/ui.ts does), `fleetmesh ui` and chromium. The
 * whole list reaches the page in the watch's first snapshot, which is one
 * admin-protocol frame larger than any request the coordinator accepts; the
 * filter and the sort work on all of it. `fleetmesh machines` answers too.
 */
import { join, resolve } from 'node:path'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedMachines } from '../../bench/ui.ts'
import { chromiumMissing, launchChromium, type RunningUi, startUi } from '../../testkit/dashboard.ts'
import { TestFleet } from '../../testkit/harness.ts'

const MACHINES = 1000
const SCREENSHOTS = resolve(import.meta.dirname, '../../.tmp/screenshots')

let fleet: TestFleet
let ui: RunningUi
let browser: Browser

beforeAll(async () => {
  if (chromiumMissing) return
  fleet = await TestFleet.create()
  // the first start creates the database; it is seeded while the coordinator is stopped
  await (await fleet.startCoordinator()).kill('SIGTERM')
  await seedMachines(fleet.coordState, MACHINES)
  await fleet.startCoordinator()
  ;[ui, browser] = await Promise.all([startUi(fleet.home), launchChromium()])
  fleet.procs.push(ui.proc)
}, 120_000)

afterAll(async () => {
  await browser?.close()
  await fleet?.stop()
})

describe.skipIf(chromiumMissing !== undefined)(
  `${MACHINES} machines (${chromiumMissing ?? 'chromium'})`,
  () => {
    it('fleetmesh machines lists them all', async () => {
      expect(await fleet.machines()).toHaveLength(MACHINES)
    })

    it('the dashboard shows them all, filters and sorts them', async () => {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
      const errors: string[] = []
      page.on('pageerror', (err) => errors.push(err.message))
      await page.goto(ui.url)
      await page.waitForFunction(
        (n) => (globalThis as unknown as { fmTimings: { rows: number } }).fmTimings.rows === n,
        MACHINES,
      )
      expect(await page.locator('#machines tbody tr').count()).toBe(MACHINES)
      await page.screenshot({ path: join(SCREENSHOTS, 'machines-1000.png') })

      await page.locator('#filter').fill('rack-3 tag:lab')
      await page.locator('tr[data-machine="seed-0000"]').waitFor({ state: 'hidden' })
      // rack-3 is every tenth machine from 3, lab every third from 0: 34 of the 1,000 (3, 33, … 993) carry both
      expect(await page.locator('#machines tbody tr:not([hidden])').count()).toBe(34)
      await page.locator('#filter').fill('')
      await page.locator('#machines th[data-sort="name"]').click()
      await expect(page.locator('#machines tbody tr').first().getAttribute('data-machine')).resolves.toBe(
        'seed-0999',
      )
      expect(errors).toEqual([])
      await page.close()
    })
  },
)
