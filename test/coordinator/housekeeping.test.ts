/**
 * Expired admin request nonces are pruned: when the coordinator starts, and
 * periodically while it runs (a real coordinator and a real SQLite store).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startCoordinator } from '../../coordinator/daemon.ts'
import { startHousekeeping } from '../../coordinator/housekeeping.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import { TestFleet } from '../../testkit/harness.ts'

const cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

describe('admin request nonces', () => {
  it('expired ones are pruned when the coordinator starts; live ones stay', async () => {
    const fleet = await TestFleet.create()
    cleanup.push(() => fleet.stop())
    const options = { stateDir: fleet.coordState, listen: [`/ip4/127.0.0.1/tcp/${fleet.port}`] }
    const first = await startCoordinator(options)
    expect(await first.store.rememberNonce('expired', Date.now() - 1)).toBe(true)
    expect(await first.store.rememberNonce('live', Date.now() + 3_600_000)).toBe(true)
    await first.stop()
    const second = await startCoordinator(options)
    cleanup.push(() => second.stop())
    // The start-up round ran before startCoordinator resolved (its SQLite statement is synchronous).
    expect(await second.store.rememberNonce('expired', Date.now() + 60_000)).toBe(true)
    expect(await second.store.rememberNonce('live', Date.now() + 60_000)).toBe(false)
  })

  it('are pruned again every interval', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fm-housekeeping-'))
    const store = await openSqliteStore(join(dir, 'fleet.db'))
    cleanup.push(async () => {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    })
    let rounds = 0
    let next = Promise.withResolvers<void>()
    const housekeeping = startHousekeeping({
      store,
      intervalMs: 20,
      onRound: () => {
        rounds++
        next.resolve()
      },
    })
    cleanup.push(() => housekeeping.stop())
    await next.promise
    next = Promise.withResolvers<void>()
    expect(await store.rememberNonce('n', Date.now() - 1)).toBe(true)
    await next.promise
    expect(rounds).toBeGreaterThanOrEqual(2)
    expect(await store.rememberNonce('n', Date.now() + 60_000)).toBe(true)
  })
})
