/**
 * A real coordinator process on `--store postgres://…`: an agent enrolls, a
 * deploy reaches it and its reports are stored in the database, not in the
 * state directory; after a kill -9 a new coordinator process on the same
 * database knows the machine, and the audit log verifies end to end.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { openPostgresStore } from '../../coordinator/pg-store.ts'
import { fileSize } from '../../lib/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { TestFleet } from '../../testkit/harness.ts'
import { type PgCluster, postgresUnavailable, startPostgres } from '../../testkit/postgres.ts'

const unavailable = postgresUnavailable()

describe.skipIf(unavailable !== undefined)(
  `a coordinator on PostgreSQL${unavailable === undefined ? '' : ` (skipped: ${unavailable})`}`,
  () => {
    let fleet: TestFleet | undefined
    let cluster: PgCluster | undefined
    afterEach(async () => {
      await fleet?.stop()
      await cluster?.stop()
    })

    it('keeps the fleet in the database across a kill -9, and the audit log verifies', async () => {
      cluster = await startPostgres()
      const url = await cluster.createDatabase()
      const f = await TestFleet.create()
      fleet = f
      const first = await f.startCoordinator(['--store', url])
      const agent = await f.enrollAgent('edge-1')
      const archive = await makeArchive(f.dir, { version: 'v1' })
      const deployed = await f.deploy(archive, 'edge-1', 'v1')
      expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
      await agent.waitFor(
        (e) => e.event === 'status' && e.state === 'committed' && e.desiredGeneration === 'v1',
        60_000,
        'edge-1 committed v1',
      )
      await first.kill('SIGKILL')
      expect(await fileSize(f.storePath), 'no SQLite file beside the PostgreSQL store').toBeUndefined()

      await f.startCoordinator(['--store', url])
      expect((await f.machines()).map((m) => m.name)).toEqual(['edge-1'])
      const audit = await f.cli(['audit', '--verify'])
      expect(audit.code, audit.stdout + audit.stderr).toBe(0)

      const store = await openPostgresStore(url)
      try {
        expect((await store.statusHistory('edge-1', 100)).length).toBeGreaterThan(0)
        expect((await store.getDesired('edge-1'))?.generation).toBe('v1')
      } finally {
        await store.close()
      }
    }, 120_000)
  },
)
