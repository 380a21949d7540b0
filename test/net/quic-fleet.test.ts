/**
 * Real processes: a coordinator that init told about a TCP and a QUIC address
 * listens on both, an agent enrolled with a token carrying both runs its
 * control link over QUIC, and `fleetmesh machines` shows each machine's
 * transport beside its path (QUIC for that agent, TCP for one told to dial the
 * TCP address).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { MachineView } from '../../protocol/index.ts'
import { agentArgs, FleetDirectory, initArgs } from '../../testkit/fleetmesh.ts'
import { freePort, Proc, runCli } from '../../testkit/harness.ts'

describe('QUIC between agent and coordinator processes', () => {
  let fleet: FleetDirectory
  const procs: Proc[] = []
  beforeEach(async () => {
    fleet = new FleetDirectory(await mkdtemp(join(tmpdir(), 'fm-quic-')))
  })
  afterEach(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')))
    await rm(fleet.dir, { recursive: true, force: true })
  })

  it('the agent connects over QUIC and says so, and machines shows each transport', async () => {
    const port = await freePort()
    const tcp = `/ip4/127.0.0.1/tcp/${port}`
    const quic = `/ip4/127.0.0.1/udp/${port}/quic-v1`
    const init = await runCli([
      '--home',
      fleet.home,
      ...initArgs({ fleet: 'test', coordState: fleet.coordState, coordinatorAddrs: [tcp, quic] }),
    ])
    expect(init.code, init.stderr).toBe(0)
    const coordinator = new Proc('coordinator', ['coordinator', '--state', fleet.coordState, '--json'])
    procs.push(coordinator)
    const ready = await coordinator.waitFor((e) => e.event === 'ready', 30_000, 'coordinator ready')
    expect(ready.addrs).toEqual([
      expect.stringMatching(new RegExp(`^${tcp}/p2p/`)),
      expect.stringMatching(new RegExp(`^${quic}/p2p/`)),
    ])

    const enroll = await runCli(['--home', fleet.home, 'enroll', 'edge-1', '--json'])
    expect(enroll.code, enroll.stderr).toBe(0)
    const { token } = JSON.parse(enroll.stdout) as { token: string }
    const agent = new Proc('agent edge-1', agentArgs(fleet.agentState('edge-1'), ['--token', token]))
    procs.push(agent)
    const connected = await agent.waitFor((e) => e.event === 'connected', 30_000, 'edge-1 connected')
    expect(connected.path).toBe('direct')
    expect(String(connected.addr)).toContain('/quic-v1')

    // edge-2 is given the TCP address only: its link runs over TCP
    const enroll2 = await runCli(['--home', fleet.home, 'enroll', 'edge-2', '--json'])
    expect(enroll2.code, enroll2.stderr).toBe(0)
    const tcpOnly = ['--coordinator-addr', String((ready.addrs as string[])[0])]
    const token2 = (JSON.parse(enroll2.stdout) as { token: string }).token
    const agent2 = new Proc(
      'agent edge-2',
      agentArgs(fleet.agentState('edge-2'), ['--token', token2, ...tcpOnly]),
    )
    procs.push(agent2)
    const connected2 = await agent2.waitFor((e) => e.event === 'connected', 30_000, 'edge-2 connected')
    expect(String(connected2.addr)).toContain('/tcp/')
    // the coordinator says a machine is online once it has recorded how it connected
    for (const machine of ['edge-1', 'edge-2'])
      await coordinator.waitFor(
        (e) => e.event === 'online' && e.machine === machine,
        30_000,
        `${machine} online`,
      )

    const listed = await runCli(['--home', fleet.home, 'machines', '--json'])
    expect(listed.code, listed.stderr).toBe(0)
    const views = JSON.parse(listed.stdout) as MachineView[]
    expect(views.map((m) => [m.name, m.online, m.path, m.transport])).toEqual([
      ['edge-1', true, 'direct', 'quic'],
      ['edge-2', true, 'direct', 'tcp'],
    ])
    const table = await runCli(['--home', fleet.home, 'machines'])
    expect(table.stdout).toMatch(/^edge-1 .* direct quic$/m)
    expect(table.stdout).toMatch(/^edge-2 .* direct tcp$/m)
  }, 120_000)
})
