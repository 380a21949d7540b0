/**
 * `fleetmesh init --coordinator-addr` decides where agents dial; the
 * coordinator started without --listen must listen exactly there.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { listenFromConfig } from '../../coordinator/listen-addrs.ts'
import { coordinatorConfigSchema } from '../../protocol/fleet-config.ts'
import { agentArgs, FleetDirectory, initArgs } from '../../testkit/fleetmesh.ts'
import { freePort, Proc, runCli } from '../../testkit/harness.ts'

describe('coordinator listen addresses from init', () => {
  let fleet: FleetDirectory
  const procs: Proc[] = []
  beforeEach(async () => {
    fleet = new FleetDirectory(await mkdtemp(join(tmpdir(), 'fm-listen-')))
  })
  afterEach(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')))
    await rm(fleet.dir, { recursive: true, force: true })
  })

  it('listens on the non-default port init recorded, and an agent with a token connects', async () => {
    const port = await freePort()
    const addr = `/ip4/127.0.0.1/tcp/${port}`
    const init = await runCli([
      '--home',
      fleet.home,
      ...initArgs({ fleet: 'test', coordState: fleet.coordState, coordinatorAddrs: [addr] }),
    ])
    expect(init.code, init.stderr).toBe(0)
    const coordinator = new Proc('coordinator', ['coordinator', '--state', fleet.coordState, '--json'])
    procs.push(coordinator)
    const ready = await coordinator.waitFor((e) => e.event === 'ready', 30_000, 'coordinator ready')
    // and QUIC on the same port number, in UDP
    expect(ready.addrs).toEqual([
      expect.stringMatching(new RegExp(`^${addr}/p2p/`)),
      expect.stringMatching(new RegExp(`^/ip4/127.0.0.1/udp/${port}/quic-v1/p2p/`)),
    ])
    expect(ready.listenNotes).toBeUndefined()

    const enroll = await runCli(['--home', fleet.home, 'enroll', 'web-1', '--json'])
    expect(enroll.code, enroll.stderr).toBe(0)
    const { token } = JSON.parse(enroll.stdout) as { token: string }
    const agent = new Proc('agent web-1', agentArgs(fleet.agentState('web-1'), ['--token', token]))
    procs.push(agent)
    await agent.waitFor((e) => e.event === 'connected', 30_000, 'web-1 connected')
  }, 120_000)
})

describe('listenFromConfig', () => {
  const local = new Set(['127.0.0.1', '10.0.0.5'])

  it('keeps addresses of this host and drops the peer id', () => {
    expect(listenFromConfig(['/ip4/10.0.0.5/tcp/14001/p2p/12D3KooWabc'], local)).toEqual({
      listen: ['/ip4/10.0.0.5/tcp/14001'],
      notes: [],
    })
  })

  it('listens on every interface for a DNS name or a foreign IP, and says so', () => {
    const plan = listenFromConfig(
      ['/dns4/coord.example.org/tcp/4101', '/ip4/203.0.113.7/tcp/4101', '/dns6/coord.example.org/tcp/4102'],
      local,
    )
    expect(plan.listen).toEqual(['/ip4/0.0.0.0/tcp/4101', '/ip6/::/tcp/4102'])
    expect(plan.notes).toHaveLength(3)
    expect(plan.notes[0]).toContain(
      '/dns4/coord.example.org/tcp/4101 is a DNS name: listening on /ip4/0.0.0.0/tcp/4101',
    )
  })

  it('keeps a QUIC address as it keeps a TCP one', () => {
    expect(listenFromConfig(['/ip4/10.0.0.5/udp/14001/quic-v1/p2p/12D3KooWabc'], local)).toEqual({
      listen: ['/ip4/10.0.0.5/udp/14001/quic-v1'],
      notes: [],
    })
  })

  it('skips relayed addresses, pointing at --reserve-on', () => {
    const plan = listenFromConfig(
      ['/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWrelay/p2p-circuit/p2p/12D3KooWme'],
      local,
    )
    expect(plan.listen).toEqual([])
    expect(plan.notes[0]).toContain('--reserve-on')
  })

  it('listens on the default addresses for a coordinator.json from before init recorded them', () => {
    const old = { fleetId: 'test', fleetRoot: 'A'.repeat(43) }
    expect(coordinatorConfigSchema.parse(old).listen).toBeUndefined()
    expect(listenFromConfig([], local)).toEqual({ listen: [], notes: [] })
  })
})
