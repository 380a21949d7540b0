/**
 * ping, doctor and log are about one machine: a second name or a bad one is a
 * usage error (exit 2) before anything is dialled, never silently ignored.
 */
import { describe, expect, it } from 'vitest'
import { runCli } from '../../testkit/harness.ts'

describe('commands about one machine', () => {
  for (const command of ['ping', 'doctor', 'log']) {
    it(`${command} refuses a second machine and an invalid name`, async () => {
      const two = await runCli([command, 'edge-1', 'edge-2'])
      expect(two.code).toBe(2)
      expect(two.stderr).toContain(`${command} takes one machine, got edge-1 edge-2`)
      const bad = await runCli([command, 'Edge 1!'])
      expect(bad.code).toBe(2)
      expect(bad.stderr).toContain('"Edge 1!" is not a valid machine name')
    })
  }
})
