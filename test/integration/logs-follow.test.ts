/**
 * `fleetmesh logs <machine> --follow` with real processes: the output of a
 * running update's activation and health check reaches the follower while the
 * update runs (the activate hook waits for a file the test creates only once
 * the follower showed its first line), in order with the state changes, and
 * the follow ends with the update: 0 at committed, 1 with the reason when it
 * rolled back. Output lost while the follow was cut off comes from the log the
 * agent reported, before the outcome. An admin whose certificate does not cover the machine is
 * refused as if it did not exist.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeTar, sh } from '../../testkit/archives.ts'
import { type Event, Proc, TestFleet } from '../../testkit/harness.ts'
import { grantAdmin } from '../coordinator/scoped-admin.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
})
afterEach(async () => {
  await fleet.stop()
})

const text = (e: Event) => (e.event === 'text' ? String(e.text) : '')
/** Where in the follower's output the first line containing `part` is. */
const lineOf = (events: Event[], part: string) => events.findIndex((e) => text(e).includes(part))

/** A long-running admin command of the fleet's first admin (killed by fleet.stop()). */
function startAdmin(args: string[]): Proc {
  const p = new Proc(`fleetmesh ${args.join(' ')}`, ['--home', fleet.home, ...args])
  fleet.procs.push(p)
  return p
}

async function deployNoWait(archive: string, extra: string[] = []): Promise<void> {
  const r = await fleet.deploy(archive, 'edge-1', 'v1', ['--no-watch', ...extra])
  expect(r.code, r.stderr).toBe(0)
}

describe('fleetmesh logs <machine> --follow', () => {
  it("shows an activation's output while it runs, then the rest, and exits 0 at committed", async () => {
    await fleet.enrollAgent('edge-1', ['lab'])
    const gate = join(fleet.dir, 'gate')
    const archive = await makeTar(fleet.dir, {
      VERSION: 'v1\n',
      activate: sh(
        `echo "first line of the activation"\nwhile [ ! -e '${gate}' ]; do sleep 0.05; done\necho "second line of the activation"`,
      ),
    })
    const follow = startAdmin(['logs', 'edge-1', '--follow'])
    // The last log is printed once the coordinator follows the machine: nothing after it is missed.
    await follow.waitFor((e) => text(e).startsWith('machine '), 30_000, 'the last update log')
    await deployNoWait(archive.path)
    await follow.waitFor((e) => text(e).includes('first line of the activation'), 60_000, 'the first line')
    // The update is still running: the hook waits for the gate, which only now opens.
    expect(follow.child.exitCode).toBeNull()
    expect(lineOf(follow.events, 'committed')).toBe(-1)
    await writeFile(gate, '')
    expect(await follow.exited).toBe(0)
    const order = [
      '-- edge-1: downloading',
      '-- edge-1: activating',
      'first line of the activation',
      'second line of the activation',
      '-- edge-1: confirming',
      '-- edge-1: committed (generation v1)',
    ].map((part) => lineOf(follow.events, part))
    const shown = follow.events.map(text).join('\n')
    expect(
      order.every((i) => i >= 0),
      `every part in the output:\n${shown}`,
    ).toBe(true)
    expect(
      [...order].sort((a, b) => a - b),
      `in order:\n${shown}`,
    ).toEqual(order)
  })

  it('goes on through a coordinator restart (kill -9), shows the output printed meanwhile from the reported log, and exits 0 at committed', async () => {
    await fleet.enrollAgent('edge-1', ['lab'])
    const gate = join(fleet.dir, 'gate')
    const archive = await makeTar(fleet.dir, {
      VERSION: 'v1\n',
      activate: sh(
        `echo "before the restart"\nwhile [ ! -e '${gate}' ]; do sleep 0.05; done\necho "printed while the coordinator was down"`,
      ),
    })
    const follow = startAdmin(['logs', 'edge-1', '--follow'])
    await follow.waitFor((e) => text(e).startsWith('machine '), 30_000, 'the last update log')
    await deployNoWait(archive.path)
    await follow.waitFor((e) => text(e).includes('before the restart'), 60_000, 'the first line')
    await fleet.coordinator?.kill('SIGKILL')
    await follow.waitForStderr('lost the coordinator', 30_000)
    // The rest of the activation prints while no coordinator runs: its live chunk is lost.
    await writeFile(gate, '')
    await fleet.startCoordinator()
    await follow.waitForStderr('reconnected to the coordinator', 60_000)
    expect(await follow.exited).toBe(0)
    const missing = lineOf(follow.events, 'printed while the coordinator was down')
    // It comes from the log the agent reported durably, shown before the outcome.
    expect(lineOf(follow.events, 'live output was lost on the way')).toBeGreaterThan(
      lineOf(follow.events, 'before the restart'),
    )
    expect(missing).toBeGreaterThan(lineOf(follow.events, 'live output was lost on the way'))
    expect(lineOf(follow.events, '-- edge-1: committed (generation v1)')).toBeGreaterThan(missing)
  })

  it("shows a failing health check's output and exits 1 with the reason (--json)", async () => {
    await fleet.enrollAgent('edge-1', ['lab'])
    const archive = await makeTar(fleet.dir, {
      VERSION: 'v1\n',
      health: sh('echo "health: probing :8080"\necho "health: connection refused" >&2\nexit 1'),
    })
    const follow = startAdmin(['logs', 'edge-1', '--follow', '--json'])
    await follow.waitFor((e) => e.type === 'log', 30_000, 'the last update log')
    await deployNoWait(archive.path, ['--health-check', './health', '--health-retries', '0'])
    expect(await follow.exited).toBe(1)
    const output = follow.events
      .filter((e) => e.type === 'output')
      .map((e) => String(e.text))
      .join('')
    expect(output).toContain('$ ./health')
    expect(output).toContain('health: probing :8080')
    expect(output).toContain('health: connection refused')
    const settled = follow.events.find((e) => e.type === 'settled')
    expect(settled).toMatchObject({
      machine: 'edge-1',
      state: 'rolled-back',
      error: { code: 'health-check-failed' },
    })
    // The output came before the outcome, and no JSON line was anything else.
    expect(follow.events.findIndex((e) => e.type === 'settled')).toBe(follow.events.length - 1)
    expect(follow.events.filter((e) => e.event === 'text')).toEqual([])
  })

  it('refuses a machine the admin does not cover as unknown, and follows one it covers until --timeout', async () => {
    await fleet.enrollAgent('edge-1', ['lab'])
    await fleet.enrollAgent('edge-2', ['prod'])
    const viewer = await grantAdmin(fleet, 'viewer', ['--caps', 'read', '--tags', 'lab'])
    const refused = await viewer.cli('logs', 'edge-2', '--follow')
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('[unknown-machine]')
    expect(refused.stdout).toBe('')
    const covered = await viewer.cli('logs', 'edge-1', '--follow', '--timeout', '1s')
    expect(covered.code, covered.stderr).toBe(2)
    expect(covered.stderr).toContain('waiting for the next update on edge-1')
    expect(covered.stdout).toContain('timed out after 1 s; no update started on edge-1')
  })
})
