/**
 * A coordinator state directory that has an identity but no usable database is
 * damage, not a new fleet: `fleetmesh coordinator` exits non-zero, names the
 * file and says how to restore it, and leaves the file as it found it. Only the
 * first start after `fleetmesh init` creates the database.
 */
import { randomBytes } from 'node:crypto'
import { copyFile, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startCoordinator } from '../../coordinator/daemon.ts'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { NEW_FLEET_FILE } from '../../protocol/index.ts'
import { coordinatorArgs } from '../../testkit/fleetmesh.ts'
import { runCli, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let backup: string

const removeDb = async (path: string) => {
  for (const suffix of ['', '-wal', '-shm']) await rm(`${path}${suffix}`, { force: true })
}

beforeAll(async () => {
  fleet = await TestFleet.create()
  const listen = [`/ip4/127.0.0.1/tcp/${fleet.port}`]
  // the first start after init creates the database, and only that start may
  const marker = join(fleet.coordState, NEW_FLEET_FILE)
  expect((await stat(marker)).isFile()).toBe(true)
  const first = await startCoordinator({ stateDir: fleet.coordState, listen })
  const key = PrivateKey.generate()
  await first.store.enrollMachine({
    name: 'edge-1',
    peerId: key.toPeerId().toString(),
    publicKey: key.publicKey.toString(),
    tags: [],
    facts: {},
    nonce: randomBytes(16).toString('hex'),
    at: Date.now(),
  })
  await first.stop()
  await expect(stat(marker)).rejects.toThrow('ENOENT')
  backup = join(fleet.dir, 'fleet.db.backup')
  await copyFile(fleet.storePath, backup)
})
afterAll(async () => {
  await fleet.stop()
})
beforeEach(async () => {
  await removeDb(fleet.storePath)
  await copyFile(backup, fleet.storePath)
})

/** Runs the coordinator on the state directory; it must exit on its own. */
async function startRefused(): Promise<string> {
  const r = await runCli(coordinatorArgs(fleet.coordState, '/ip4/127.0.0.1/tcp/0'), {}, 60_000)
  expect(r.stdout).not.toContain('"ready"')
  expect(r.code, r.stdout + r.stderr).toBe(1)
  // what happened, which file, how to restore, and that init is not the way back
  expect(r.stderr).toContain(fleet.storePath)
  expect(r.stderr).toContain('backup')
  expect(r.stderr).toContain('fleetmesh init')
  expect(r.stderr).not.toMatch(/^fleetmesh: Error: (file is not a database|database disk image)/m)
  return r.stderr
}

const fileBytes = (path: string) => readFile(path).catch(() => undefined)

describe('a coordinator whose database is damaged', () => {
  it('refuses an empty (0-byte) database and leaves it empty', async () => {
    await writeFile(fleet.storePath, '')
    expect(await startRefused()).toContain('empty')
    expect((await stat(fleet.storePath)).size).toBe(0)
  })

  it('refuses a missing database and does not create one', async () => {
    await removeDb(fleet.storePath)
    expect(await startRefused()).toContain('missing')
    expect(await fileBytes(fleet.storePath)).toBeUndefined()
  })

  it('refuses a file that is not a database', async () => {
    const garbage = Buffer.from('not sqlite at all\n'.repeat(300))
    await writeFile(fleet.storePath, garbage)
    expect(await startRefused()).toContain('not a SQLite database')
    expect(await fileBytes(fleet.storePath)).toEqual(garbage)
  })

  it('refuses a malformed database', async () => {
    const bytes = await readFile(fleet.storePath)
    bytes.fill(0x5a, 100, 4096)
    await writeFile(fleet.storePath, bytes)
    expect(await startRefused()).toContain('damaged')
  })

  it('refuses a database without the fleet schema', async () => {
    await removeDb(fleet.storePath)
    const db = new DatabaseSync(fleet.storePath)
    db.exec('CREATE TABLE notes (text TEXT)')
    db.close()
    expect(await startRefused()).toContain('schema')
  })

  it("refuses another fleet's database", async () => {
    await removeDb(fleet.storePath)
    const other = await openSqliteStore(fleet.storePath)
    await other.initFleet('other-fleet', PrivateKey.generate().publicKey.toString())
    await other.close()
    expect(await startRefused()).toContain('"other-fleet"')
  })

  it('starts again on the restored backup, with its machines', async () => {
    await writeFile(fleet.storePath, '')
    await startRefused()
    await removeDb(fleet.storePath)
    await copyFile(backup, fleet.storePath)
    await fleet.startCoordinator()
    const machines = await fleet.json<{ name: string }[]>(['machines'])
    expect(machines.map((m) => m.name)).toEqual(['edge-1'])
    await fleet.coordinator?.kill('SIGTERM')
  })
})
