/**
 * `npm run demo:rollout`: rollouts in waves on a fleet of ten agents on
 * loopback, with temporary state (the embedded SQLite store, no setup).
 * Starts a coordinator and ten agents as separate processes, deploys a release
 * whose health check fails in waves (a canary, then up to 30%, then the rest),
 * watches the canary fail and the rollout halt before any other machine gets
 * it, shows the rollout and the audited halt, then deploys a good release that
 * goes through every wave, watched live. Every process it started is killed at
 * the end, also on failure or Ctrl-C (demo-kit.ts).
 */
import { makeArchive } from '../testkit/archives.ts'
import { deployArgs } from '../testkit/fleetmesh.ts'
import type { TestFleet } from '../testkit/harness.ts'
import { capture, run, runDemo, say, step } from './demo-kit.ts'

const MACHINES = Array.from({ length: 10 }, (_, i) => `edge-${String(i + 1).padStart(2, '0')}`)
const WAVES = ['--waves', '1,30%,100%', '--soak', '2s', '--health-check', './health', '--health-retries', '0']

/** Submits a release in waves without following it; its rollout id. */
async function submit(fleet: TestFleet, version: string, healthExit: number): Promise<string> {
  const archive = await makeArchive(fleet.dir, { version, healthExit })
  const r = await capture([
    '--home',
    fleet.home,
    ...deployArgs(archive, 'tag:demo', version, [...WAVES, '--no-watch', '--json']),
  ])
  if (r.code !== 0) throw new Error(`deploy of ${version} exited ${r.code}`)
  return (JSON.parse(r.stdout) as { rolloutId: string }).rolloutId
}

/** The state a rollout ended in, as `rollout show` says. */
async function stateOf(fleet: TestFleet, rolloutId: string): Promise<string> {
  return (await fleet.json<{ state: string }>(['rollout', 'show', rolloutId])).state
}

await runDemo(async (fleet) => {
  step(`fleet "test" created in ${fleet.dir} (admin keys, fleet root, coordinator identity)`)
  const coordinator = await fleet.startCoordinator()
  const ready = coordinator.events.find((e) => e.event === 'ready')
  say(`coordinator ${String(ready?.peerId)} listening on 127.0.0.1:${fleet.port} (store: SQLite)`)

  step('enrolling ten agents (each a separate process with its own key and state)')
  const connected = []
  for (const name of MACHINES) {
    const agent = fleet.startAgent(name, ['--token', await fleet.token(name, ['demo'])])
    connected.push(agent.waitFor((e) => e.event === 'connected', 60_000, `${name} connected`))
  }
  // Settled, not Promise.all: an agent that never connects must not leave the others' waits unhandled.
  const failed = (await Promise.allSettled(connected)).find((r) => r.status === 'rejected')
  if (failed !== undefined) throw failed.reason
  say(`${MACHINES.length} agents enrolled and connected`)
  await run(['--home', fleet.home, 'machines'])

  step('web-2 in waves: 1 canary, then up to 30%, then the rest; its health check fails')
  say('Expected: the canary takes web-2, fails its health check and rolls back; the rollout halts')
  say('and no other machine ever gets web-2.')
  const bad = await submit(fleet, 'web-2', 3)
  await run(['--home', fleet.home, 'watch', '--rollout', bad])

  step('the halted rollout, machine by machine')
  await run(['--home', fleet.home, 'rollout', 'show', bad])

  step('the halt is in the audit log, with its reason (verified: hash chain and every signature)')
  await run(['--home', fleet.home, 'audit', '--verify', '--limit', '3'])
  const audit = await fleet.json<{ records: { action: string; detail: string }[] }>(['audit'])
  const halt = audit.records.find((r) => r.action === 'rollout-halt')
  say(`halt reason, as audited: ${halt?.detail ?? '(none found)'}`)

  step('web-3 in the same waves: healthy, so each wave soaks 2s and the next one starts')
  const good = await submit(fleet, 'web-3', 0)
  const watched = await run(['--home', fleet.home, 'watch', '--rollout', good])

  step('the machines table: every machine on web-3')
  await run(['--home', fleet.home, 'machines'])

  const [badState, goodState] = [await stateOf(fleet, bad), await stateOf(fleet, good)]
  if (badState === 'halted' && goodState === 'done' && watched === 0) {
    say(`\nas expected: web-2 halted at its canary, web-3 went through all waves`)
    return 0
  }
  process.stderr.write(
    `\nunexpected outcome: web-2 ${badState}, web-3 ${goodState} (watch exited ${watched})\n`,
  )
  return 1
})
