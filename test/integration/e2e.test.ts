/**
 * End to end with real processes on loopback: a coordinator, agents and the
 * admin CLI, each a separate `fleetmesh` process, real SQLite, real tar.
 */
import { readFile, readlink } from 'node:fs/promises'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { type Event, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

const isStatus = (state: string, generationPart?: string) => (e: Event) =>
  e.event === 'status' &&
  e.state === state &&
  (generationPart === undefined || String(e.desiredGeneration ?? '').includes(generationPart))

const activateHook = (version: string) => `echo "${version}" >> "$FM_TEST_LOG"`

describe('end-to-end update over the mesh', () => {
  it('updates three agents, shows progress and the final table', async () => {
    await fleet.startCoordinator()
    const agents = await Promise.all(
      ['edge-1', 'edge-2', 'edge-3'].map((n) => fleet.enrollAgent(n, ['lab'], fleet.activationEnv(n))),
    )
    const archive = await makeArchive(fleet.dir, { version: 'v1', activate: activateHook('v1') })
    const r = await fleet.deploy(archive, 'tag:lab', 'v1', ['--health-check', './health', '--timeout', '60s'])
    expect(r.stderr).toContain('uploaded')
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('settled: 3 committed, 0 not')
    const rows = await fleet.machines()
    expect(rows.map((m) => [m.name, m.state, m.currentGeneration, m.online])).toEqual([
      ['edge-1', 'committed', 'v1', true],
      ['edge-2', 'committed', 'v1', true],
      ['edge-3', 'committed', 'v1', true],
    ])
    for (const [i, a] of agents.entries()) {
      const name = `edge-${i + 1}`
      // every state was reported, in order (download progress repeats "downloading")
      const states = a.events.filter((e) => e.event === 'status').map((e) => e.state)
      const transitions = states.filter((s, i) => s !== states[i - 1])
      expect(transitions.slice(transitions.indexOf('downloading'))).toEqual([
        'downloading',
        'verified',
        'activating',
        'confirming',
        'committed',
      ])
      expect((await readFile(fleet.activationLog(name), 'utf8')).trim()).toBe('v1')
      expect(await readlink(fleet.currentProfile(name))).toContain('v1')
    }
    const audit = await fleet.cli(['audit', '--verify'])
    expect(audit.code, audit.stdout + audit.stderr).toBe(0)
    expect(audit.stdout).toContain('hash chain intact')
    expect(audit.stdout).toContain('submit-manifest')
  })

  it('an agent offline during the deploy gets it when it comes back', async () => {
    await fleet.startCoordinator()
    await fleet.enrollAgent('edge-1', ['lab'], fleet.activationEnv('edge-1'))
    const late = await fleet.enrollAgent('edge-2', ['lab'], fleet.activationEnv('edge-2'))
    await late.kill('SIGTERM')
    const archive = await makeArchive(fleet.dir, { version: 'v2', activate: activateHook('v2') })
    const r = await fleet.deploy(archive, 'tag:lab', 'v2', ['--no-watch', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const again = fleet.startAgent('edge-2', [], fleet.activationEnv('edge-2'))
    await again.waitFor(isStatus('committed', 'v2'), 60_000, 'edge-2 committed v2 after reconnect')
    const rows = await fleet.machines()
    expect(rows.find((m) => m.name === 'edge-2')?.currentGeneration).toBe('v2')
  })

  it('a failing health check rolls back and reports the failure', async () => {
    await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const good = await makeArchive(fleet.dir, { version: 'good', activate: activateHook('good') })
    expect((await fleet.deploy(good, 'edge-1', 'good', ['--health-check', './health'])).code).toBe(0)
    const bad = await makeArchive(fleet.dir, { version: 'bad', healthExit: 3, activate: activateHook('bad') })
    const r = await fleet.deploy(bad, 'edge-1', 'bad', [
      '--health-check',
      './health',
      '--health-retries',
      '0',
    ])
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('health-check-failed')
    await agent.waitFor(isStatus('rolled-back'), 10_000)
    const rows = await fleet.machines()
    expect(rows[0]?.state).toBe('rolled-back')
    expect(rows[0]?.currentGeneration).toBe('good')
    expect(rows[0]?.error?.code).toBe('health-check-failed')
    // good was activated, then bad, then good again by the rollback
    expect((await readFile(fleet.activationLog('edge-1'), 'utf8')).trim().split('\n')).toEqual([
      'good',
      'bad',
      'good',
    ])
    expect(await readlink(fleet.currentProfile('edge-1'))).toContain('good')
  })

  it('agents refuse a manifest altered by a compromised coordinator, and an old one replayed', async () => {
    const coordinator = await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const v1 = await makeArchive(fleet.dir, { version: 'v1', activate: activateHook('v1') })
    expect((await fleet.deploy(v1, 'edge-1', 'v1')).code).toBe(0)
    const v2 = await makeArchive(fleet.dir, { version: 'v2', activate: activateHook('v2') })
    expect((await fleet.deploy(v2, 'edge-1', 'v2', ['--no-watch'])).code).toBe(0)
    await agent.waitFor(isStatus('committed', 'v2'), 30_000)
    await coordinator.kill('SIGKILL')
    // The attacker owns the coordinator's database: point the machine back at the old
    // manifest (replay) ...
    const db = new DatabaseSync(fleet.storePath)
    const rows = db.prepare('SELECT id, generation FROM manifests ORDER BY sequence').all() as {
      id: string
      generation: string
    }[]
    const [old] = rows
    db.prepare('UPDATE desired SET manifest_id = ? WHERE machine = ?').run(old?.id ?? '', 'edge-1')
    db.close()
    await fleet.startCoordinator()
    await agent.waitFor(
      (e) =>
        e.event === 'status' && e.state === 'refused' && (e.error as { code?: string })?.code === 'replayed',
      30_000,
      'replay refused',
    )
    // ... and then alter the bytes of the current manifest (e.g. to swap the payload).
    await fleet.coordinator?.kill('SIGKILL')
    const db2 = new DatabaseSync(fleet.storePath)
    const latest = db2.prepare('SELECT id, envelope FROM manifests ORDER BY sequence DESC LIMIT 1').get() as {
      id: string
      envelope: Uint8Array
    }
    const forged = Uint8Array.from(latest.envelope)
    const at = Buffer.from(forged).indexOf(Buffer.from('v2'))
    forged[at + 1] = '3'.charCodeAt(0) // generation "v2" → "v3" inside the signed payload
    db2.prepare('UPDATE manifests SET envelope = ?, id = id WHERE id = ?').run(forged, latest.id)
    db2.prepare('UPDATE desired SET manifest_id = ? WHERE machine = ?').run(latest.id, 'edge-1')
    db2.close()
    await fleet.startCoordinator()
    await agent.waitFor(
      (e) =>
        e.event === 'status' &&
        e.state === 'refused' &&
        (e.error as { code?: string })?.code === 'bad-envelope',
      30_000,
      'forgery refused',
    )
    expect((await readFile(fleet.activationLog('edge-1'), 'utf8')).trim().split('\n')).toEqual(['v1', 'v2'])
    expect(await readlink(fleet.currentProfile('edge-1'))).toContain('v2')
  })
})
