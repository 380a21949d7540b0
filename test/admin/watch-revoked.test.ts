/**
 * A `watch` outlives the request that opened it, so the coordinator checks the
 * admin's certificate chain again while it streams: a watch whose certificate is
 * revoked, or expires, is ended with that refusal, and `fleetmesh watch` exits
 * non-zero saying why instead of reconnecting. Real coordinator and CLI processes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EXIT } from '../../admin/rollout-outcome.ts'
import { type Event, type Proc, TestFleet } from '../../testkit/harness.ts'
import { grantAdmin } from '../coordinator/scoped-admin.ts'

let fleet: TestFleet

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  await fleet.enrollAgent('edge-1', ['lab'])
}, 90_000)

afterAll(async () => {
  await fleet.stop()
})

/**
 * Resolves once `watch` has streamed an event about a machine enrolled now: the
 * watch is open and live (a whole-fleet watch prints nothing for its snapshot).
 */
async function live(watch: Proc, machine: string): Promise<void> {
  await fleet.enrollAgent(machine, ['lab'])
  const about = (e: Event) => (e as { machine?: { name?: string } }).machine?.name === machine
  await watch.waitFor(about, 30_000, `an event about ${machine}`)
}

describe('fleetmesh watch after its certificate stops being valid', () => {
  it('ends at once with "revoked" when the certificate is revoked, without reconnecting', async () => {
    const viewer = await grantAdmin(fleet, 'viewer', ['--caps', 'read', '--tags', 'lab'])
    // Without the re-check this watch would run on until its --timeout (exit 2).
    const watch = viewer.start(['watch', '--json', '--timeout', '60s'])
    await live(watch, 'edge-2')

    const revoked = await fleet.cli(['admin', 'revoke', viewer.serial, '--reason', 'laptop lost'])
    expect(revoked.code, revoked.stderr).toBe(0)

    expect(await watch.exited).toBe(EXIT.notCommitted)
    const stderr = watch.stderr.join('\n')
    expect(stderr).toContain('[revoked]')
    expect(stderr).toMatch(
      /the coordinator ended the watch: certificate [0-9a-f]{32} \("viewer"\) has been revoked/,
    )
    expect(stderr).not.toMatch(/reconnect/)
    expect(watch.events).toContainEqual(expect.objectContaining({ type: 'refused', code: 'revoked' }))

    // The refusal is in the audit log under the viewer's key.
    const audit = await fleet.json<{ records: { action: string; outcome: string; detail: string }[] }>([
      'audit',
      '--limit',
      '1000',
    ])
    expect(audit.records).toContainEqual(
      expect.objectContaining({
        action: 'watch',
        outcome: 'denied',
        detail: expect.stringMatching(/^revoked: /),
      }),
    )
  }, 120_000)

  it('ends with "expired" when the certificate expires while it watches', async () => {
    const brief = await grantAdmin(fleet, 'brief', ['--caps', 'read', '--all', '--valid', '20s'])
    const watch = brief.start(['watch', '--json', '--timeout', '90s'])
    await live(watch, 'edge-3')

    expect(await watch.exited).toBe(EXIT.notCommitted)
    const stderr = watch.stderr.join('\n')
    expect(stderr).toContain('[expired]')
    expect(stderr).toMatch(
      /the coordinator ended the watch: certificate [0-9a-f]{32} \("brief"\) expired at /,
    )
  }, 120_000)
})
