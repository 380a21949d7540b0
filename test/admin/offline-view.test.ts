// How the machines table and watch lines show an offline machine: marked
// offline, no connection path, LAST SEEN the last time it was connected.
import { describe, expect, it } from 'vitest'
import { machineLine, machinesTable } from '../../admin/format.ts'
import type { MachineView } from '../../protocol/index.ts'
import { sampleMachineView } from '../../testkit/fixtures.ts'

const view: MachineView = sampleMachineView()

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
