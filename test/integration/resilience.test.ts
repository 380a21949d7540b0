/**
 * Real-process resilience and security: crashes of coordinator and agent, and
 * admins without the right certificate.
 */
import { readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, runCli, TestFleet, waitForFile } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

describe('admin authorisation', () => {
  it('denies and audits a read-only admin deploying and an admin from another fleet', async () => {
    await fleet.startCoordinator()
    const viewerHome = join(fleet.dir, 'viewer')
    const viewerKey = JSON.parse(
      (await runCli(['--home', viewerHome, 'admin', 'keygen', '--json'])).stdout,
    ) as { publicKey: string }
    const grant = await fleet.json<{ bundle: string }>([
      'admin',
      'grant',
      '--subject',
      viewerKey.publicKey,
      '--name',
      'viewer',
      '--caps',
      'read',
      '--all',
    ])
    expect((await runCli(['--home', viewerHome, 'admin', 'install', grant.bundle])).code).toBe(0)
    // reading works
    const list = await runCli(['--home', viewerHome, 'machines', '--json'])
    expect(list.code, list.stderr).toBe(0)
    // deploying does not
    const archive = await makeArchive(fleet.dir, { version: 'x' })
    const denied = await runCli(['--home', viewerHome, 'deploy', archive, '--to', 'edge-1'])
    expect(denied.code).toBe(1)
    expect(denied.stderr).toContain('capability-missing')

    // A stranger with a certificate from a different fleet root, pointed at this coordinator.
    const strangerHome = join(fleet.dir, 'stranger')
    const other = await runCli([
      '--home',
      strangerHome,
      'init',
      '--fleet',
      'other',
      '--coordinator-state',
      join(fleet.dir, 'other-coord'),
      '--coordinator-addr',
      '/ip4/127.0.0.1/tcp/1',
    ])
    expect(other.code, other.stderr).toBe(0)
    const { copyFile } = await import('node:fs/promises')
    // the fleet's public files: which fleet and coordinators (the root-signed list) to talk to
    await copyFile(join(fleet.home, 'fleet.json'), join(strangerHome, 'fleet.json'))
    await copyFile(join(fleet.home, 'coordinators.list'), join(strangerHome, 'coordinators.list'))
    const stranger = await runCli(['--home', strangerHome, 'machines'])
    expect(stranger.code).toBe(1)
    expect(stranger.stderr).toContain('wrong-issuer')

    const audit = await fleet.json<{
      verified: { ok: boolean }
      records: { action: string; outcome: string; detail: string }[]
    }>(['audit', '--limit', '100'])
    expect(audit.verified.ok).toBe(true)
    const denials = audit.records.filter((r) => r.outcome === 'denied')
    expect(denials.map((r) => r.detail.split(':')[0])).toEqual(
      expect.arrayContaining(['capability-missing', 'wrong-issuer']),
    )
  })
})

describe('crashes', () => {
  it('kill -9 of the coordinator loses no acknowledged report', async () => {
    const coordinator = await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    const deploy = fleet.deploy(archive, 'edge-1', 'v1', ['--no-watch'])
    // Kill the coordinator right after the agent has had its first update report acknowledged.
    await agent.waitFor(
      (e) => e.event === 'acked' && typeof e.seq === 'number' && e.seq >= 2,
      30_000,
      'an ack',
    )
    await coordinator.kill('SIGKILL')
    const acked = agent.events.filter((e) => e.event === 'acked').map((e) => e.seq as number)
    await deploy
    const db = new DatabaseSync(fleet.storePath, { readOnly: true })
    const stored = new Set(
      (db.prepare('SELECT seq FROM statuses WHERE machine = ?').all('edge-1') as { seq: number }[]).map(
        (r) => r.seq,
      ),
    )
    db.close()
    for (const seq of acked) expect(stored.has(seq), `acked seq ${seq} stored`).toBe(true)
    // and after a restart the agent delivers the rest, ending committed
    await fleet.startCoordinator()
    await agent.waitFor((e) => e.event === 'status' && e.state === 'committed', 60_000, 'committed')
    const rows = await fleet.json<{ name: string; state: string }[]>(['machines'])
    await agent.waitFor(
      (e) =>
        e.event === 'acked' &&
        (e.seq as number) >=
          Math.max(...agent.events.filter((x) => x.event === 'status').map((x) => x.seq as number)),
      30_000,
      'all reports acked',
    )
    const final = await fleet.json<{ name: string; state: string }[]>(['machines'])
    expect([rows.length, final[0]?.state]).toEqual([1, 'committed'])
  })

  it('kill -9 of an agent mid-activation recovers to a whole generation', async () => {
    await fleet.startCoordinator()
    const env = fleet.activationEnv('edge-1')
    const agent = await fleet.enrollAgent('edge-1', [], env)
    const v1 = await makeArchive(fleet.dir, { version: 'v1', activate: 'echo v1 >> "$FM_TEST_LOG"' })
    expect((await fleet.deploy(v1, 'edge-1', 'v1')).code).toBe(0)
    // v2's activate hook announces itself, then hangs: the agent dies while it runs.
    const v2 = await makeArchive(fleet.dir, {
      version: 'v2',
      activate: 'echo v2-started >> "$FM_TEST_LOG"; sleep 5',
    })
    expect((await fleet.deploy(v2, 'edge-1', 'v2', ['--no-watch'])).code).toBe(0)
    await waitForFile(fleet.activationLog('edge-1'), (t) => t.includes('v2-started'))
    await agent.kill('SIGKILL')
    expect(await readlink(fleet.currentProfile('edge-1'))).toContain('v2') // it had switched
    const again = fleet.startAgent('edge-1', [], env)
    const rolled = await again.waitFor(
      (e: Event) => e.event === 'status' && e.state === 'rolled-back',
      30_000,
      'rolled back',
    )
    expect((rolled.error as { code: string }).code).toBe('interrupted')
    expect(await readlink(fleet.currentProfile('edge-1'))).toContain('v1')
    const log = (await readFile(fleet.activationLog('edge-1'), 'utf8')).trim().split('\n')
    expect(log).toEqual(['v1', 'v2-started', 'v1'])
    const rows = await fleet.json<{ name: string; state: string; currentGeneration: string }[]>(['machines'])
    expect([rows[0]?.state, rows[0]?.currentGeneration]).toEqual(['rolled-back', 'v1'])
  })
})
