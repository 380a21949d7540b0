// How the machines table and watch lines show an offline machine: marked
// offline, no connection path, and LAST SEEN the last time it was connected —
// also when it was connected until the coordinator itself stopped.
import { setTimeout as delay } from 'node:timers/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { machineLine, machinesTable } from '../../admin/format.ts'
import type { MachineView } from '../../protocol/index.ts'
import { TestFleet } from '../../testkit/harness.ts'

const view: MachineView = {
  name: 'edge-1',
  peerId: '12D3KooWPlaceholder',
  tags: [],
  online: true,
  path: 'direct',
  enrolledAt: 0,
  lastSeen: Date.now(),
  state: 'committed',
  currentGeneration: 'v1',
  desiredGeneration: 'v1',
  manifestId: null,
  rolloutId: null,
  desiredManifestId: null,
  desiredRolloutId: null,
  progress: null,
  error: null,
  rebootRequired: false,
  reportedAt: Date.now(),
}

describe('text views of an offline machine', () => {
  const offline: MachineView = { ...view, online: false, lastSeen: Date.now() - 120_000 }

  it('watch lines mark it offline', () => {
    expect(machineLine(offline)).toMatch(/committed \(offline\) \(on v1\)/)
    expect(machineLine(view)).not.toContain('offline')
  })

  it('the table marks its state offline, shows no path, and when it was last seen', () => {
    const rows = machinesTable([offline]).split('\n')
    const row = rows[1] ?? ''
    expect(row).toContain('committed (offline)')
    expect(row).toContain('2m ago')
    expect(row).not.toContain('direct')
    expect(row.trimEnd().endsWith('-')).toBe(true)
    const failed = {
      ...offline,
      state: 'rolled-back' as const,
      error: { code: 'health-check-failed', message: 'x' },
    }
    expect(machinesTable([failed])).toContain('rolled-back (health-check-failed, offline)')
    const online = machinesTable([view])
    expect(online).toContain('direct')
    expect(online).not.toContain('offline')
  })
})

describe('last seen across a coordinator stop', () => {
  let fleet: TestFleet | undefined
  afterEach(async () => {
    await fleet?.stop()
  })

  it('is the time the coordinator stopped, not the time the machine connected', async () => {
    fleet = await TestFleet.create()
    const coordinator = await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1')
    await delay(3_000)
    const stoppedAfter = Date.now()
    await coordinator.kill('SIGTERM')
    await agent.kill('SIGTERM')
    await fleet.startCoordinator()
    const [row] = await fleet.json<MachineView[]>(['machines'])
    expect(row?.online).toBe(false)
    expect(row?.lastSeen).toBeGreaterThanOrEqual(stoppedAfter)
  })
})
