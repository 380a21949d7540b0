/**
 * Revocations reach the devices, with real processes: an agent that was offline
 * while an admin was revoked refuses that admin's still-desired manifest as
 * "revoked"; a manifest signed by a revoked admin and written into the
 * coordinator's database by an attacker is refused too; and a coordinator that
 * lost (or hides) a revocation while delivering a newer manifest that names it
 * gets nothing done: the agent refuses to act and says why.
 */
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadAdminHome } from '../../admin/home.ts'
import { buildManifest, type MachineView, openManifest, sealManifest } from '../../protocol/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { deployArgs } from '../../testkit/fleetmesh.ts'
import { type Event, type Proc, runCli, TestFleet, waitForFile } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

/** A second admin, "bob", who may deploy anywhere: its home directory and certificate serial. */
async function grantBob(): Promise<{ home: string; serial: string }> {
  const home = join(fleet.dir, 'bob')
  const keygen = await runCli(['--home', home, 'admin', 'keygen', '--json'])
  expect(keygen.code, keygen.stderr).toBe(0)
  const { publicKey } = JSON.parse(keygen.stdout) as { publicKey: string }
  const granted = await fleet.json<{ bundle: string; serial: string }>([
    'admin',
    'grant',
    '--subject',
    publicKey,
    '--name',
    'bob',
    '--caps',
    'deploy,read',
    '--all',
  ])
  const install = await runCli(['--home', home, 'admin', 'install', granted.bundle])
  expect(install.code, install.stderr).toBe(0)
  return { home, serial: granted.serial }
}

async function revoke(serial: string): Promise<void> {
  const r = await fleet.cli(['admin', 'revoke', serial, '--reason', 'laptop lost'])
  expect(r.code, r.stdout + r.stderr).toBe(0)
}

async function stopAgent(agent: Proc): Promise<void> {
  await agent.kill()
}

/** The agent's refusal of the offered manifest, once the coordinator has stored the report saying so. */
async function refusal(agent: Proc): Promise<{ code: string; message: string }> {
  const offer = await agent.waitFor((e) => e.event === 'offer' && e.outcome !== 'ignored', 60_000, 'an offer')
  expect(offer.outcome, JSON.stringify(offer)).toBe('refused')
  const status = await agent.waitFor((e) => e.event === 'status' && e.state === 'refused', 10_000, 'report')
  await agent.waitFor((e: Event) => e.event === 'acked' && Number(e.seq) >= Number(status.seq), 30_000, 'ack')
  return offer.error as { code: string; message: string }
}

async function machine(name: string): Promise<MachineView | undefined> {
  return (await fleet.machines()).find((m) => m.name === name)
}

describe('revocations reach the agents', () => {
  it("an agent offline during the revocation refuses the revoked admin's still-desired manifest", async () => {
    await fleet.startCoordinator()
    const bob = await grantBob()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    await stopAgent(agent)
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    const deployed = await runCli(['--home', bob.home, ...deployArgs(v1, 'edge-1', 'bob-v1', ['--no-watch'])])
    expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
    await revoke(bob.serial)

    const back = fleet.startAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const error = await refusal(back)
    expect(error.code).toBe('revoked')
    expect(error.message).toContain(bob.serial)
    expect(back.events.some((e) => e.event === 'status' && e.state === 'activating')).toBe(false)
    expect(await machine('edge-1')).toMatchObject({ state: 'refused', currentGeneration: null })
    expect((await machine('edge-1'))?.error?.code).toBe('revoked')
  }, 180_000)

  it('refuses a manifest signed by a revoked admin that was written into the coordinator database', async () => {
    await fleet.startCoordinator()
    const bob = await grantBob()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    expect((await fleet.deploy(v1, 'edge-1', 'admin-v1', ['--timeout', '60s'])).code).toBe(0)
    await revoke(bob.serial)
    // pushed to the connected agent at once
    await waitForFile(join(fleet.agentState('edge-1'), 'revocations.json'), (text) => {
      return (JSON.parse(text) as { entries: string[] }).entries.length === 1
    })
    await stopAgent(agent)

    // An attacker with bob's key and write access to the database: the same (uploaded) archive,
    // signed by bob, made edge-1's desired state.
    const db = new DatabaseSync(fleet.storePath)
    try {
      const last = db.prepare('SELECT sequence, envelope FROM manifests ORDER BY sequence DESC LIMIT 1').get()
      const previous = openManifest(last?.envelope as Uint8Array).value
      const home = await loadAdminHome(bob.home)
      const m = buildManifest({
        fleetId: previous.fleetId,
        sequence: Number(last?.sequence) + 1,
        generation: 'bob-evil',
        targets: { machines: ['edge-1'], tags: [] },
        payload: previous.payload,
      })
      db.prepare(
        `INSERT INTO manifests (id, sequence, rollout_id, generation, targets, envelope, submitted_by,
          submitted_at, expires_at, machines) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        m.id,
        m.sequence,
        m.rolloutId,
        m.generation,
        JSON.stringify(m.targets),
        sealManifest(m, home.key, home.chain),
        home.key.publicKey.toString(),
        Date.now(),
        m.expiresAt,
        JSON.stringify(['edge-1']),
      )
      db.prepare('UPDATE desired SET manifest_id = ? WHERE machine = ?').run(m.id, 'edge-1')
    } finally {
      db.close()
    }

    const back = fleet.startAgent('edge-1', [], fleet.activationEnv('edge-1'))
    expect((await refusal(back)).code).toBe('revoked')
    expect(await machine('edge-1')).toMatchObject({ state: 'refused', currentGeneration: 'admin-v1' })
  }, 180_000)

  it('a coordinator that lost a revocation cannot get a manifest that names it acted on', async () => {
    await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    await stopAgent(agent)
    await revoke('ab'.repeat(16))
    const v1 = await makeArchive(fleet.dir, { version: 'v1' })
    expect((await fleet.deploy(v1, 'edge-1', 'after-revoke', ['--no-watch'])).code).toBe(0)

    // The coordinator's database loses the entry (an old backup restored, or a coordinator that hides it).
    await fleet.coordinator?.kill()
    const db = new DatabaseSync(fleet.storePath)
    try {
      db.exec('DROP TRIGGER revocation_log_no_delete; DELETE FROM revocation_log')
    } finally {
      db.close()
    }
    await fleet.startCoordinator()

    const back = fleet.startAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const error = await refusal(back)
    expect(error.code).toBe('revocations-missing')
    expect(error.message).toMatch(/up to entry 1.*only up to entry 0/)
    const row = await machine('edge-1')
    expect(row).toMatchObject({ state: 'refused', currentGeneration: null })
    expect(row?.error?.code).toBe('revocations-missing')
  }, 180_000)

  it('an agent that holds entries a restored coordinator lost reports it and gives them back', async () => {
    await fleet.startCoordinator()
    const agent = await fleet.enrollAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const serial = 'cd'.repeat(16)
    await revoke(serial)
    await waitForFile(join(fleet.agentState('edge-1'), 'revocations.json'), (text) => {
      return (JSON.parse(text) as { entries: string[] }).entries.length === 1
    })
    await stopAgent(agent)
    await fleet.coordinator?.kill()
    const db = new DatabaseSync(fleet.storePath)
    try {
      db.exec('DROP TRIGGER revocation_log_no_delete; DELETE FROM revocation_log')
    } finally {
      db.close()
    }
    await fleet.startCoordinator()

    const back = fleet.startAgent('edge-1', [], fleet.activationEnv('edge-1'))
    const alarm = await back.waitFor((e) => e.event === 'revocation-alarm', 60_000, 'the alarm')
    expect(alarm.code).toBe('revocations-rollback')
    await fleet.coordinator?.waitFor(
      (e) => JSON.stringify(e).includes('took back 1 revocation entries from edge-1'),
      30_000,
      'the entry taken back',
    )
    // the coordinator's list holds it again: revoking once more changes nothing
    const again = await fleet.json<{ entry: number; already: boolean }>(['admin', 'revoke', serial])
    expect(again).toMatchObject({ entry: 1, already: true })
    const status = await back.waitFor(
      (e) => e.event === 'status' && (e.error as { code?: string } | null)?.code === 'revocations-rollback',
      30_000,
      'the report',
    )
    // stored by the coordinator (the next report, of the agent's own state, may replace it in `machines`)
    await back.waitFor((e) => e.event === 'acked' && Number(e.seq) >= Number(status.seq), 30_000, 'its ack')
  }, 180_000)
})
