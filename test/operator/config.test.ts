/**
 * Daemons configured the way a service manager runs them: a JSON file named by
 * --config, FLEETMESH_<OPTION> variables, or both under a command line that
 * wins over them. Real processes: a coordinator from only a file, an agent from
 * only variables (which, given no --listen, must hold no listening socket), a
 * relay from all three sources. Every refusal names the key and the file or
 * the variable, and exits 2 before anything starts.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FleetDirectory, initArgs } from '../../testkit/fleetmesh.ts'
import { freePort, Proc, runCli } from '../../testkit/harness.ts'

/** TCP sockets in LISTEN state that process `pid` holds, as "address:port" in /proc's hex. */
function listeningSockets(pid: number): string[] {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m !== null) inodes.add(m[1]!)
    } catch {
      // the descriptor closed while we looked
    }
  }
  const listening: string[] = []
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      // local_address is column 1, st column 3 (0A = LISTEN), inode column 9
      if (cols[3] === '0A' && inodes.has(cols[9] ?? '')) listening.push(cols[1]!)
    }
  }
  return listening
}

describe.skipIf(process.platform !== 'linux')('daemon configuration: --config and FLEETMESH_*', () => {
  let fleet: FleetDirectory
  let initAddr: string
  let coordAddr: string
  let coordinatorPeerId = ''
  const procs: Proc[] = []

  beforeAll(async () => {
    fleet = new FleetDirectory(await mkdtemp(join(tmpdir(), 'fm-config-')))
    initAddr = `/ip4/127.0.0.1/tcp/${await freePort()}`
    coordAddr = `/ip4/127.0.0.1/tcp/${await freePort()}`
    const init = await runCli([
      '--home',
      fleet.home,
      ...initArgs({ fleet: 'cfg', coordState: fleet.coordState, coordinatorAddrs: [initAddr] }),
    ])
    expect(init.code, init.stderr).toBe(0)
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')))
    await rm(fleet.dir, { recursive: true, force: true })
  })

  const write = async (name: string, value: unknown): Promise<string> => {
    const path = join(fleet.dir, name)
    await writeFile(path, typeof value === 'string' ? value : JSON.stringify(value, null, 2))
    return path
  }

  it('a coordinator started with only --config uses the state and listen address in the file', async () => {
    // a listen address other than the one init recorded, so only the file can have chosen it
    const config = await write('coordinator.json', {
      '//': 'written by the test',
      state: fleet.coordState,
      listen: [coordAddr],
      json: true,
    })
    const coordinator = new Proc('coordinator', ['coordinator', '--config', config])
    procs.push(coordinator)
    const ready = await coordinator.waitFor((e) => e.event === 'ready', 30_000, 'coordinator ready')
    // the file's TCP address, and QUIC on the same port beside it
    const quicAddr = coordAddr.replace(/\/tcp\/(\d+)$/, '/udp/$1/quic-v1')
    expect(ready.addrs).toEqual([
      expect.stringMatching(new RegExp(`^${coordAddr}/p2p/`)),
      expect.stringMatching(new RegExp(`^${quicAddr}/p2p/`)),
    ])
    coordinatorPeerId = String(ready.peerId)
  }, 60_000)

  it('an agent started with only FLEETMESH_* variables enrolls, connects, and listens nowhere', async () => {
    expect(coordinatorPeerId, 'the coordinator test ran first').not.toBe('')
    const enroll = await runCli(['--home', fleet.home, 'enroll', 'edge-1', '--json'])
    expect(enroll.code, enroll.stderr).toBe(0)
    const tokenFile = await write('edge-1.token', (JSON.parse(enroll.stdout) as { token: string }).token)
    const state = fleet.agentState('edge-1')
    const deadAddr = `/ip4/127.0.0.1/tcp/${await freePort()}`
    const agent = new Proc('agent edge-1', ['agent'], {
      FLEETMESH_STATE: state,
      FLEETMESH_TOKEN: `@${tokenFile}`,
      // the token says initAddr, where nothing listens: only the variable finds the coordinator
      FLEETMESH_COORDINATOR_ADDR: `${deadAddr},${coordAddr}`,
      FLEETMESH_KEEPALIVE: '1s',
      FLEETMESH_JSON: '1',
    })
    procs.push(agent)
    await agent.waitFor((e) => e.event === 'connected', 30_000, 'edge-1 connected')
    const enrollment = JSON.parse(await readFile(join(state, 'enrollment.json'), 'utf8')) as {
      coordinator: { addrs: string[] }
    }
    expect(enrollment.coordinator.addrs).toEqual([deadAddr, coordAddr])
    // no --listen: nothing in the fleet dials an agent, so it must not listen on every interface
    expect(listeningSockets(agent.child.pid!)).toEqual([])
    const runtime = JSON.parse(await readFile(join(state, 'runtime.json'), 'utf8')) as { listen: string[] }
    expect(runtime.listen).toEqual([])

    // The variables stay as the service manager set them, but the token file is gone after
    // enrollment, as the example config advises: an enrolled agent must not need it.
    await agent.kill('SIGTERM')
    await rm(tokenFile)
    const again = new Proc('agent edge-1 again', ['agent'], {
      FLEETMESH_STATE: state,
      FLEETMESH_TOKEN: `@${tokenFile}`,
      FLEETMESH_COORDINATOR_ADDR: coordAddr,
      FLEETMESH_JSON: '1',
    })
    procs.push(again)
    await again.waitFor(
      (e) => e.event === 'connected',
      30_000,
      'edge-1 connected again without its token file',
    )
  }, 90_000)

  it('a relay: the command line wins over the environment, the environment over the file', async () => {
    const [filePort, envPort, cliPort] = [await freePort(), await freePort(), await freePort()]
    const config = await write('relay.json', {
      state: join(fleet.dir, 'relay'),
      listen: `/ip4/127.0.0.1/tcp/${filePort}`,
      'observer-ports': ['0', '0'],
      'relay-reservation-ttl': '1h',
      json: true,
    })
    const argv = ['relay', '--config', config, '--listen', `/ip4/127.0.0.1/tcp/${cliPort}`]
    const env = {
      FLEETMESH_LISTEN: `/ip4/127.0.0.1/tcp/${envPort}`,
      FLEETMESH_OBSERVER_PORTS: 'none',
      FLEETMESH_RELAY_MAX_RESERVATIONS: '7',
    }
    const printed = await runCli([...argv, '--print-config'], env)
    expect(printed.code, printed.stderr).toBe(0)
    expect(JSON.parse(printed.stdout)).toMatchObject({
      state: join(fleet.dir, 'relay'),
      listen: [`/ip4/127.0.0.1/tcp/${cliPort}`],
      'observer-ports': ['none'],
      'relay-max-reservations': '7',
      'relay-reservation-ttl': '1h',
      json: true,
      '//from': {
        listen: '--listen',
        'observer-ports': 'FLEETMESH_OBSERVER_PORTS',
        json: `json in ${config}`,
      },
    })

    const relay = new Proc('relay', argv, env)
    procs.push(relay)
    // a JSON `ready` line at all: --json came from the file
    const ready = await relay.waitFor((e) => e.event === 'ready', 30_000, 'relay ready')
    expect(ready.addrs).toEqual([
      expect.stringMatching(new RegExp(`^/ip4/127.0.0.1/tcp/${cliPort}/p2p/`)),
      expect.stringMatching(new RegExp(`^/ip4/127.0.0.1/udp/${cliPort}/quic-v1/p2p/`)),
    ])
    expect(ready.observerPorts, 'FLEETMESH_OBSERVER_PORTS=none over the file').toEqual([])
    expect(ready.limits).toMatchObject({ maxReservations: 7, reservationTtlMs: 3_600_000 })
  }, 60_000)

  it.each(['coordinator', 'agent', 'relay'])(
    'fleetmesh %s --help names --config and the variables',
    async (role) => {
      const help = await runCli([role, '--help'])
      expect(help.code).toBe(0)
      expect(help.stdout).toContain('--config <file.json>')
      expect(help.stdout).toContain('--print-config')
      expect(help.stdout).toContain('FLEETMESH_<OPTION>')
    },
  )

  it('the agent says when --listen is worth giving', async () => {
    const help = await runCli(['agent', '--help'])
    const line = help.stdout.split('\n').find((l) => l.trimStart().startsWith('--listen'))
    expect(line).toContain('nothing in a fleet dials agents')
    expect(line).not.toContain('0.0.0.0')
  })

  it('refusals name the key and the file or variable, exit 2, and start nothing', async () => {
    const state = join(fleet.dir, 'never')
    const typo = await write('typo.json', { state, 'reserve-keepalve': '5s' })
    const wrongType = await write('wrong-type.json', { state, keepalive: 10 })
    const badJson = await write('bad.json', `{\n  "state": "${state}",\n  "json": true,\n}\n`)
    const badDuration = await write('bad-duration.json', { state, 'relay-duration-limit': 'a day' })
    const cases: [string[], NodeJS.ProcessEnv, string][] = [
      [
        ['coordinator', '--config', typo],
        {},
        `unknown key "reserve-keepalve" in the config file ${typo}; did you mean 'reserve-keepalive'?`,
      ],
      [
        ['agent', '--config', wrongType],
        {},
        `keepalive in ${wrongType} must be a string like "10s", not the number 10`,
      ],
      [['relay', '--config', badJson], {}, `the config file ${badJson} is not valid JSON:`],
      [
        ['relay', '--config', badDuration],
        {},
        `relay-duration-limit in ${badDuration} must be a duration like`,
      ],
      [
        ['agent'],
        { FLEETMESH_STATE: state, FLEETMESH_KEEPALIVE: '50ms' },
        'FLEETMESH_KEEPALIVE must be at least 200ms',
      ],
      [['relay'], { FLEETMESH_STATE: state, FLEETMESH_JSON: 'sure' }, 'FLEETMESH_JSON must be 1 or 0'],
      [['coordinator'], {}, '--state is required: give it on the command line, as FLEETMESH_STATE'],
    ]
    const results = await Promise.all(cases.map(([argv, env]) => runCli(argv, env, 60_000)))
    results.forEach((r, i) => {
      const [argv, , expected] = cases[i]!
      expect(r.stderr, argv.join(' ')).toContain(expected)
      expect(r.code, argv.join(' ')).toBe(2)
    })
    await expect(readFile(join(state, 'identity.key'))).rejects.toThrow(/ENOENT/)
  }, 90_000)
})
