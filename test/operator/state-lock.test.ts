/**
 * One daemon per state directory: a second coordinator or agent started on a
 * directory in use exits non-zero, saying which process holds it, and the first
 * keeps running undisturbed.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { agentArgs, coordinatorArgs } from '../../testkit/fleetmesh.ts'
import { runCli, TestFleet } from '../../testkit/harness.ts'

describe('state directory lock', () => {
  let fleet: TestFleet
  beforeEach(async () => {
    fleet = await TestFleet.create()
  }, 60_000)
  afterEach(async () => {
    await fleet.stop()
  })

  it('refuses a second coordinator and a second agent on a directory in use', async () => {
    const coordinator = await fleet.startCoordinator()
    const second = await runCli(coordinatorArgs(fleet.coordState, '/ip4/127.0.0.1/tcp/0'), {}, 60_000)
    expect(second.code).toBe(1)
    expect(second.stderr).toContain(
      `${fleet.coordState} is in use by fleetmesh coordinator (pid ${coordinator.child.pid}); stop it first`,
    )

    const agent = await fleet.enrollAgent('web-1')
    const twin = await runCli(agentArgs(fleet.agentState('web-1')), {}, 60_000)
    expect(twin.code).toBe(1)
    expect(twin.stderr).toContain(
      `${fleet.agentState('web-1')} is in use by fleetmesh agent (pid ${agent.child.pid}); stop it first`,
    )

    // both first daemons still run, and the agent never lost its link to a twin
    expect(coordinator.child.exitCode).toBeNull()
    expect(agent.child.exitCode).toBeNull()
    expect(agent.events.some((e) => e.event === 'disconnected')).toBe(false)
    const list = await fleet.json<unknown>(['machines'])
    expect(JSON.stringify(list)).toContain('web-1')
  }, 120_000)

  it('a stopped daemon leaves the directory free for the next one', async () => {
    const coordinator = await fleet.startCoordinator()
    await coordinator.kill('SIGTERM')
    await fleet.startCoordinator()
  }, 120_000)
})
