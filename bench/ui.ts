/**
 * The dashboard at fleet scale, in a real browser: a coordinator whose store
 * holds `machines` machines (most seeded straight into its database, the last
 * BURST_AGENTS enrolled for real and connected as in-process agents, as in
 * bench/fleet.ts), `fleetmesh ui` as a child process and Debian's chromium.
 *
 *  - first render: from the start of the navigation to the frame after the
 *    table first held every machine (the page's own clock), and the wall time
 *    of the same load seen from here; the reference is `fleetmesh machines
 *    --json` for the same machines, run in the same bench (process start
 *    included, as an operator pays it);
 *  - a burst of 1,000 status reports (BURST_AGENTS agents × their share): from
 *    the agents' send to the table showing all 1,000 events, against the
 *    coordinator's own ingest of the same reports (the last acknowledgement).
 */
import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAdminHome } from '../admin/home.ts'
import { CoordinatorLink } from '../agent/link.ts'
import { FLEET_DB_FILE } from '../coordinator/daemon.ts'
import { openSqliteStore } from '../coordinator/sqlite-store.ts'
import { DOMAINS, PrivateKey } from '../keys/index.ts'
import { sealEnvelope, statusReportSchema } from '../protocol/index.ts'
import { chromiumMissing, launchChromium, startUi } from '../testkit/dashboard.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { sampleStatus } from '../testkit/fixtures.ts'
import { TestFleet } from '../testkit/harness.ts'
import { fmt, line } from './measure.ts'

const BURST_AGENTS = 20
const BURST_REPORTS = 1000

interface BurstAgent {
  name: string
  key: PrivateKey
  link: CoordinatorLink
  queue: { seq: number; envelope: Uint8Array }[]
  acked: (seq: number) => void
}

/** Seeds `count` enrolled machines (no agent behind them) into the stopped coordinator's database. */
export async function seedMachines(stateDir: string, count: number): Promise<void> {
  const store = await openSqliteStore(join(stateDir, FLEET_DB_FILE))
  try {
    for (let i = 0; i < count; i++) {
      const key = PrivateKey.generate()
      await store.enrollMachine({
        name: `seed-${String(i).padStart(4, '0')}`,
        peerId: key.toPeerId().toString(),
        publicKey: key.publicKey.toString(),
        tags: [i % 3 === 0 ? 'lab' : 'prod', `rack-${i % 10}`],
        facts: {},
        nonce: randomBytes(16).toString('hex'),
        at: Date.now(),
      })
    }
  } finally {
    await store.close()
  }
}

async function connectAgents(fleet: TestFleet): Promise<BurstAgent[]> {
  const home = await loadAdminHome(fleet.home)
  const dir = join(fleet.dir, 'agents')
  await mkdir(dir, { recursive: true })
  return Promise.all(
    Array.from({ length: BURST_AGENTS }, async (_, i) => {
      const name = `live-${String(i).padStart(2, '0')}`
      const { key, host } = await enrolledHost(fleet, name, ['live'], dir)
      const agent: BurstAgent = {
        name,
        key,
        link: undefined as unknown as CoordinatorLink,
        queue: [],
        acked: () => {},
      }
      agent.link = new CoordinatorLink({
        host,
        coordinator: peerIdFromString(home.fleet.coordinator.peerId),
        coordinatorAddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)],
        machine: name,
        keepaliveMs: 30_000,
        deadAfterMs: 600_000,
        queue: {
          pending: async () => agent.queue,
          ack: async (seq) => {
            while (agent.queue.length > 0 && (agent.queue[0]?.seq ?? 0) <= seq) agent.queue.shift()
            agent.acked(seq)
          },
        },
        onManifest: () => {},
      })
      const connected = agent.link.whenConnected()
      agent.link.start()
      await connected
      return agent
    }),
  )
}

export async function benchUi(machines: number): Promise<Record<string, number>> {
  if (chromiumMissing !== undefined) {
    console.log(`skipped: ${chromiumMissing}`)
    return {}
  }
  const out: Record<string, number> = {}
  const fleet = await TestFleet.create()
  let agents: BurstAgent[] = []
  const browser = await launchChromium()
  try {
    // The first start creates the database; it is seeded while the coordinator is stopped.
    await (await fleet.startCoordinator()).kill('SIGTERM')
    const seeded = Math.max(0, machines - BURST_AGENTS)
    process.stdout.write(`  seeding ${seeded} machines, connecting ${BURST_AGENTS} agents…`)
    const started = Date.now()
    await seedMachines(fleet.coordState, seeded)
    await fleet.startCoordinator(['--idle-timeout', '10m'])
    agents = await connectAgents(fleet)
    process.stdout.write(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    const total = seeded + agents.length

    const cli = await fleet.cli(['machines', '--json'])
    if (cli.code !== 0) throw new Error(`fleetmesh machines failed: ${cli.stderr}`)
    const ui = await startUi(fleet.home)
    fleet.procs.push(ui.proc)

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    const t0 = performance.now()
    await page.goto(ui.url)
    await page.waitForFunction(
      (n) => (globalThis as unknown as { fmTimings: { rows: number } }).fmTimings.rows >= n,
      total,
      { timeout: 120_000 },
    )
    const wall = performance.now() - t0
    const firstTable = await page.evaluate(
      () => (globalThis as unknown as { fmTimings: { firstTable: number } }).fmTimings.firstTable,
    )
    console.log(`Dashboard first render of the machine table, ${total} machines (chromium, headless)`)
    line('navigation → full table on screen (page clock)', `${fmt(firstTable, 0)} ms`)
    line('page.goto → full table (wall, from here)', `${fmt(wall, 0)} ms`)
    line('reference: fleetmesh machines --json (CLI wall)', `${fmt(cli.ms, 0)} ms`)
    line('ratio first render / CLI', `${fmt(firstTable / cli.ms, 2)}×`)
    out['first render ms'] = firstTable
    out['first render wall ms'] = wall
    out['machines cli ms'] = cli.ms

    // ---- a burst of status reports, each one watch event and one row update
    const shown = () =>
      page.evaluate(() => (globalThis as unknown as { fmTimings: { shown: number } }).fmTimings.shown)
    const before = await shown()
    const perAgent = Math.ceil(BURST_REPORTS / agents.length)
    let seq = 1000
    const ingested = Promise.all(
      agents.map((a) => {
        for (let i = 1; i <= perAgent; i++) {
          const report = sampleStatus({
            machine: a.name,
            seq: ++seq,
            state: i === perAgent ? 'committed' : 'downloading',
            progress: i === perAgent ? null : { done: i, total: perAgent },
            timestamp: Date.now(),
          })
          a.queue.push({ seq, envelope: sealEnvelope(statusReportSchema, DOMAINS.status, report, a.key) })
        }
        const last = seq
        return new Promise<void>((resolve) => {
          a.acked = (s) => {
            if (s >= last) resolve()
          }
        })
      }),
    )
    const sent = perAgent * agents.length
    const t1 = performance.now()
    for (const a of agents) a.link.flush()
    await ingested
    const ingestMs = performance.now() - t1
    await page.waitForFunction(
      (n) => (globalThis as unknown as { fmTimings: { shown: number } }).fmTimings.shown >= n,
      before + sent,
      { timeout: 120_000, polling: 'raf' },
    )
    const shownMs = performance.now() - t1
    console.log(`A burst of ${sent} status reports from ${agents.length} agents, shown live in the table`)
    line('send → every event shown in the table', `${fmt(shownMs, 0)} ms`)
    line('reference: send → coordinator stored and acked all', `${fmt(ingestMs, 0)} ms`)
    line('events per second shown', `${fmt((sent / shownMs) * 1000, 0)} /s`)
    out['burst shown ms'] = shownMs
    out['burst ingest ms'] = ingestMs
    await page.close()
    return out
  } finally {
    await Promise.all(agents.map((a) => a.link.stop().catch(() => {})))
    await browser.close()
    await fleet.stop()
  }
}
