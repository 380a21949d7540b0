/**
 * An enrolled agent whose identity.key is gone stops and says so, instead of
 * making a new key the coordinator would refuse while the machine's name stays
 * bound to the lost one. Real coordinator and agent processes.
 */
import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

describe('an enrolled agent without its key', () => {
  it('refuses to start, names the missing file and how to recover, and makes no new key', async () => {
    await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', ['lab'])
    await agent.kill('SIGTERM')
    const keyPath = join(fleet.agentState('edge-1'), 'identity.key')
    await rm(keyPath)

    const again = fleet.startAgent('edge-1')
    expect(await again.exited).not.toBe(0)
    const stderr = again.stderr.join('\n')
    expect(stderr).toContain('identity-missing')
    expect(stderr).toContain(keyPath)
    expect(stderr).toContain('Restore identity.key from a backup')
    expect(existsSync(keyPath)).toBe(false)
  }, 60_000)
})
