// `fleetmesh ping <machine>` and `fleetmesh doctor <machine>` as real processes:
// the coordinator measures round trips over the agent's control stream and asks
// the agent for its diagnosis; unknown and offline machines get clear errors,
// and an admin whose certificate does not cover the machine is refused and audited.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Proc, runCli, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let edge2: Proc
let edge1Token: string

beforeAll(async () => {
  fleet = await TestFleet.create()
  await fleet.startCoordinator()
  edge1Token = await fleet.token('edge-1', ['lab'])
  const edge1 = fleet.startAgent('edge-1', ['--token', edge1Token])
  edge2 = await fleet.enrollAgent('edge-2', ['prod'])
  await edge1.waitFor((e) => e.event === 'connected', 30_000, 'edge-1 connected')
}, 90_000)

afterAll(async () => {
  await fleet.stop()
})

interface PingJson {
  machine: string
  path: string
  remoteAddr: string
  probes: { seq: number; rttMs: number | null }[]
  summary: { sent: number; received: number }
  coordinatorRttMs: number | null
}

describe('fleetmesh ping <machine>', () => {
  it('prints one reply a probe over the direct control link, then min/avg/max', async () => {
    const r = await fleet.cli(['ping', 'edge-1', '--count', '3'])
    expect(r.code, r.stderr).toBe(0)
    const lines = r.stdout.split('\n')
    expect(lines[0]).toMatch(/^PING edge-1 over its control link: direct, \/ip4\/127\.0\.0\.1\/tcp\/\d+/)
    expect(lines.filter((l) => /^reply from edge-1: probe=\d time=[\d.]+ ms$/.test(l))).toHaveLength(3)
    expect(r.stdout).toContain('3 probes sent, 3 replies, 0% lost')
    expect(r.stdout).toMatch(/rtt min\/avg\/max = [\d.]+\/[\d.]+\/[\d.]+ ms/)
    expect(r.stdout).toMatch(/this admin to the coordinator: [\d.]+ ms/)
  })

  it("--json gives each probe, the path and the admin's own round trip", async () => {
    const r = await fleet.json<PingJson>(['ping', 'edge-1', '--count', '2'])
    expect(r).toMatchObject({ machine: 'edge-1', path: 'direct', summary: { sent: 2, received: 2 } })
    expect(r.probes.map((p) => p.seq)).toEqual([1, 2])
    for (const p of r.probes) expect(p.rttMs).toBeTypeOf('number')
    expect(r.coordinatorRttMs).toBeTypeOf('number')
  })

  it('names close machines for an unknown one', async () => {
    const r = await fleet.cli(['ping', 'edge-l'])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('[unknown-machine]')
    expect(r.stderr).toContain(
      `no machine named "edge-l" that your certificate covers is enrolled; did you mean 'edge-1'?`,
    )
  })
})

describe('fleetmesh doctor <machine>', () => {
  it("shows the agent's addresses, its connection to the coordinator and the path", async () => {
    const r = await fleet.cli(['doctor', 'edge-1'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^agent edge-1 \(fleetmesh-agent\/[^)]+\), asked over its control link/)
    expect(r.stdout).toMatch(/the coordinator sees it at \/ip4\/127\.0\.0\.1\/tcp\/\d+\S* \(direct, tcp\)/)
    // the agent runs with the default: no listening socket
    expect(r.stdout).toContain('listening on: none (dials out only)')
    expect(r.stdout).toMatch(/PEER +PATH +DIRECTION +REMOTE ADDRESS/)
    expect(r.stdout).toMatch(/direct tcp +outbound +\/ip4\/127\.0\.0\.1\/tcp\/\d+/)
    expect(r.stdout).toContain(`/ip4/127.0.0.1/tcp/${fleet.port}`)
  })

  it('--json carries the runtime snapshot and nothing secret', async () => {
    const r = await fleet.cli(['doctor', 'edge-1', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const result = JSON.parse(r.stdout) as {
      path: string
      diagnosis: {
        machine: string
        snapshot: { listen: string[]; details: { coordinator?: { connected: boolean; path?: string } } }
        coordinator: { addrs: string[] }
      }
    }
    expect(result.path).toBe('direct')
    expect(result.diagnosis.machine).toBe('edge-1')
    expect(result.diagnosis.snapshot.listen).toEqual([])
    expect(result.diagnosis.snapshot.details.coordinator).toMatchObject({ connected: true, path: 'direct' })
    expect(result.diagnosis.coordinator.addrs).toEqual([`/ip4/127.0.0.1/tcp/${fleet.port}`])
    expect(r.stdout).not.toContain(edge1Token)
    expect(r.stdout).not.toContain('FM_TEST_LOG')
  })

  it('still examines a daemon here with --state', async () => {
    const r = await fleet.cli(['doctor', '--state', fleet.agentState('edge-1')])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`agent in ${fleet.agentState('edge-1')}`)
    expect(r.stdout).toMatch(/^daemon: running/m)
  })
})

describe('scope', () => {
  it('refuses and audits an admin whose certificate does not cover the machine', async () => {
    const viewerHome = join(fleet.dir, 'viewer')
    const key = JSON.parse((await runCli(['--home', viewerHome, 'admin', 'keygen', '--json'])).stdout) as {
      publicKey: string
    }
    const grant = await fleet.json<{ bundle: string }>([
      'admin',
      'grant',
      '--subject',
      key.publicKey,
      '--name',
      'lab-viewer',
      '--caps',
      'read',
      '--tags',
      'lab',
    ])
    expect((await runCli(['--home', viewerHome, 'admin', 'install', grant.bundle])).code).toBe(0)
    const viewer = (...args: string[]) => runCli(['--home', viewerHome, ...args])

    expect((await viewer('ping', 'edge-1', '--count', '1')).code).toBe(0)
    // edge-2 exists outside the viewer's scope, edge-9 does not exist: the viewer cannot tell them
    // apart, with ping, doctor or log.
    const answers = await Promise.all(
      ['ping', 'doctor', 'log'].flatMap((command) => [viewer(command, 'edge-2'), viewer(command, 'edge-9')]),
    )
    for (const denied of answers) {
      expect(denied.code).toBe(1)
      expect(denied.stderr).toContain('[unknown-machine]')
    }
    const message = (r: { stderr: string }) =>
      r.stderr.replaceAll('edge-2', 'edge-?').replaceAll('edge-9', 'edge-?')
    for (let i = 0; i < answers.length; i += 2) expect(message(answers[i]!)).toBe(message(answers[i + 1]!))
    // Suggestions come only from machines the viewer may see.
    const unknown = await viewer('ping', 'edge-3')
    expect(unknown.stderr).toContain(`did you mean 'edge-1'?`)

    const audit = await fleet.json<{
      records: { action: string; outcome: string; detail: string }[]
      reads: { action: string }[]
    }>(['audit', '--reads', '--limit', '1000'])
    const refused = audit.records.filter(
      (r) => r.outcome === 'denied' && r.detail.startsWith('unknown-machine') && r.detail.includes('edge-2'),
    )
    expect(refused.map((r) => r.action).sort()).toEqual(['doctor', 'machine-log', 'ping'])
    // A successful ping is a read: counted apart from the chained log.
    expect(audit.reads.some((r) => r.action === 'ping')).toBe(true)
  }, 120_000)
})

describe('an offline machine', () => {
  it('is refused with the time it was last seen', async () => {
    await edge2.kill('SIGKILL')
    await fleet.coordinator?.waitFor(
      (e) => e.event === 'offline' && e.machine === 'edge-2',
      60_000,
      'edge-2 offline',
    )
    for (const command of ['ping', 'doctor']) {
      const r = await fleet.cli([command, 'edge-2'])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain('[offline]')
      expect(r.stderr).toMatch(/edge-2 is offline: last seen \d{4}-\d\d-\d\dT[\d:.]+Z/)
    }
  }, 90_000)
})
