/**
 * A rollout in waves is streamed, not polled: the watch of the rollout gets a
 * `rollout` event before its snapshot and one on every change as the engine
 * moves it on, `rollout show --watch` renders those (no rollout-show request,
 * as the audit's read summaries show), gives up after its --timeout, and an
 * admin who may not see the rollout gets none of its events. A watch of the whole
 * fleet (the dashboard's) gets the rollout's changes too, under the same rule. A real
 * coordinator and agents; a gate file holds the canary's activation so the
 * test opens its watches before any wave moves.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdminClient, type AdminWatch } from '../../admin/client.ts'
import { loadAdminHome } from '../../admin/home.ts'
import { EXIT } from '../../admin/rollout-outcome.ts'
import type { AuditRead, RolloutView, WatchEvent } from '../../protocol/index.ts'
import { makeTar, sh } from '../../testkit/archives.ts'
import { type Proc, TestFleet } from '../../testkit/harness.ts'
import { grantAdmin, type ScopedAdmin } from './scoped-admin.ts'

let fleet: TestFleet
let lab: ScopedAdmin
let agents: Proc[]
let gate: string
let rolloutId: string
const clients: AdminClient[] = []

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  agents = [await fleet.enrollAgent('edge-1', ['lab']), await fleet.enrollAgent('edge-2', ['prod'])]
  lab = await grantAdmin(fleet, 'lab-reader', ['--caps', 'read', '--tags', 'lab'])
  gate = join(fleet.dir, 'gate')
  const release = await makeTar(fleet.dir, {
    'app/VERSION': 'v2\n',
    activate: sh(`while [ ! -e "${gate}" ]; do sleep 0.1; done`),
    health: sh('exit 0'),
  })
  const r = await fleet.deploy(release.path, 'all', 'v2', [
    '--waves',
    '1,100%',
    '--soak',
    '1s',
    '--no-watch',
    '--json',
  ])
  expect(r.code, r.stderr).toBe(0)
  rolloutId = (JSON.parse(r.stdout) as { rolloutId: string }).rolloutId
}, 180_000)

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()))
  await fleet.stop()
})

/** A watch of the rollout, or with `id` null of the whole fleet (as the dashboard opens). */
async function watchAs(home: string, id: string | null = rolloutId): Promise<AdminWatch> {
  const client = await AdminClient.connect(await loadAdminHome(home))
  clients.push(client)
  return client.watch(id)
}

/** Reads `watch` until `until` holds for an event; every event read, that one last. */
async function readUntil(watch: AdminWatch, until: (e: WatchEvent) => boolean): Promise<WatchEvent[]> {
  const seen: WatchEvent[] = []
  while (true) {
    const e = await watch.next(60_000)
    seen.push(e)
    if (until(e)) return seen
  }
}

const views = (events: WatchEvent[]): RolloutView[] =>
  events.flatMap((e) => (e.type === 'rollout' ? [e.rollout] : []))

describe('a rollout in waves, watched', () => {
  it('rollout show --watch --timeout gives up after the duration, saying so, with its own exit code', async () => {
    const r = await fleet.cli(['rollout', 'show', rolloutId, '--watch', '--timeout', '1s'])
    expect(r.code, r.stderr).toBe(EXIT.timedOut)
    expect(r.stdout).toContain(`rollout ${rolloutId} running: wave 1 of 2`)
    expect(r.stdout).toContain(`gave up watching rollout ${rolloutId} after 1 s (--timeout)`)
    const help = await fleet.cli(['rollout', 'show', '--help'])
    expect(help.stdout).toMatch(/--timeout <duration>/)
    expect(help.stdout).toMatch(new RegExp(`${EXIT.timedOut} {2}the --timeout passed first`))
  }, 60_000)

  it('streams each change of the rollout as an event; only to admins who may see it', async () => {
    const labWatch = await watchAs(lab.home)
    const watch = await watchAs(fleet.home)
    const fleetWide = await watchAs(fleet.home, null)
    const labFleetWide = await watchAs(lab.home, null)
    const start = await readUntil(watch, (e) => e.type === 'snapshot')
    // Where it stands comes before the snapshot: the canary wave, held by the gate.
    expect(start.at(-2)).toMatchObject({ type: 'rollout', rollout: { rolloutId, state: 'running', wave: 0 } })

    const cli = fleet.cli(['rollout', 'show', rolloutId, '--watch'])
    await writeFile(gate, '')
    const changes = views(await readUntil(watch, (e) => e.type === 'rollout' && e.rollout.state === 'done'))
    // The canary's soak, the second wave starting, and the end: each pushed as it happened.
    expect(changes.some((v) => v.wave === 0 && v.soakStartedAt !== null && v.counts.done === 1)).toBe(true)
    expect(changes.some((v) => v.wave === 1 && v.state === 'running')).toBe(true)
    expect(changes.at(-1)?.counts).toMatchObject({ done: 2, failed: 0, pending: 0, waiting: 0 })

    // A whole-fleet watch gets the same engine changes (the dashboard's live rollouts), paused to done.
    const wide = views(await readUntil(fleetWide, (e) => e.type === 'rollout' && e.rollout.state === 'done'))
    expect(wide.some((v) => v.rolloutId === rolloutId && v.wave === 1 && v.state === 'running')).toBe(true)

    const shown = await cli
    expect(shown.code, shown.stderr).toBe(EXIT.committed)
    expect(shown.stdout).toContain(`rollout ${rolloutId} done: wave 2 of 2: 2 done, 0 failed`)
    // Rendered from the watch stream: the admin never asked for rollout-show.
    const { reads } = await fleet.json<{ reads: AuditRead[] }>(['audit', '--reads'])
    expect(reads.map((r) => r.action)).toContain('watch')
    expect(reads.map((r) => r.action)).not.toContain('rollout-show')

    // The lab admin covers edge-1 only: it gets edge-1's events, never the rollout's. Its watch has
    // sent everything up to edge-1 going offline once that event is here.
    await agents[0]?.kill('SIGKILL')
    const labEvents = await readUntil(labWatch, (e) => e.type === 'offline' && e.machine.name === 'edge-1')
    expect(labEvents.some((e) => e.type === 'snapshot')).toBe(true)
    expect(labEvents.filter((e) => e.type === 'rollout')).toEqual([])
    const labWide = await readUntil(labFleetWide, (e) => e.type === 'offline' && e.machine.name === 'edge-1')
    expect(labWide.filter((e) => e.type === 'rollout')).toEqual([])
  }, 120_000)
})
