/**
 * A new operator's first hour, scripted with real processes, every one started
 * from the release tarball installed as the README says (`fleetmesh` on PATH,
 * nothing from the source tree): init with a non-default coordinator address,
 * the coordinator, two enrolled agents, a deploy to the whole fleet, a deploy to
 * an unknown tag that fails at once, `watch` across a coordinator restart, and
 * finally every daemon stopped by the PID it was started with, leaving no
 * fleetmesh process behind.
 */
import { readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeArchive } from '../../testkit/archives.ts'
import { agentArgs, FleetDirectory, runToCompletion } from '../../testkit/fleetmesh.ts'
import { freePort, Proc } from '../../testkit/harness.ts'
import { type InstalledRelease, installRelease } from '../../testkit/release.ts'

/** What the operator types: the installed command, found on PATH. */
const FLEETMESH = 'fleetmesh'
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** A process as /proc shows it: start time (clock ticks since boot) tells a reused PID apart. */
interface ProcessId {
  pid: number
  start: string
}

/** Every process on the machine: pid, parent, start time, state, command line. */
async function processTable(): Promise<
  { pid: number; ppid: number; start: string; state: string; cmd: string }[]
> {
  const table = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
    // the command name in parentheses may hold spaces: the fields start after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (fields.length < 20) continue
    table.push({
      pid: Number(name),
      ppid: Number(fields[1]),
      start: fields[19] as string,
      state: fields[0] as string,
      cmd: cmd.replaceAll('\0', ' '),
    })
  }
  return table
}

/** `pid` and everything it started that is still running, with their start times. */
async function processTree(pid: number): Promise<ProcessId[]> {
  const table = await processTable()
  const tree: ProcessId[] = []
  const stack = [pid]
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const entry = table.find((p) => p.pid === next)
    if (entry === undefined) continue
    tree.push({ pid: entry.pid, start: entry.start })
    stack.push(...table.filter((p) => p.ppid === next).map((p) => p.pid))
  }
  return tree
}

/** The processes of `ids` still alive (a zombie, exited but not reaped, counts as gone). */
async function stillRunning(ids: readonly ProcessId[]): Promise<ProcessId[]> {
  const table = await processTable()
  return ids.filter((id) => table.some((p) => p.pid === id.pid && p.start === id.start && p.state !== 'Z'))
}

describe('a new operator, from the installed release', () => {
  let release: InstalledRelease
  let fleet: FleetDirectory
  let env: NodeJS.ProcessEnv
  const procs: Proc[] = []
  const start = (name: string, args: string[]) => {
    const proc = new Proc(name, args, env, FLEETMESH)
    procs.push(proc)
    return proc
  }
  const cli = (args: string[], timeoutMs = 120_000) =>
    runToCompletion(FLEETMESH, ['--home', fleet.home, ...args], { env, timeoutMs })

  beforeAll(async () => {
    release = await installRelease()
    fleet = new FleetDirectory(join(release.dir, 'fleet'))
    // the install's bin directory first, then the system's (the agent unpacks archives with tar)
    env = { PATH: `${release.binDir}:${SYSTEM_PATH}`, HOME: release.dir }
  }, 300_000)
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')))
    if (release !== undefined) await rm(release.dir, { recursive: true, force: true })
  })

  it('installs, runs a fleet, deploys, watches across a restart and stops cleanly', async () => {
    const version = await runToCompletion(FLEETMESH, ['--version'], { env, timeoutMs: 60_000 })
    expect(version.stdout).toContain(`(node ${process.versions.node})`)

    // init on a port that is not the default 4001: the coordinator must listen there without --listen
    let port = await freePort()
    while (port === 4001) port = await freePort()
    const addr = `/ip4/127.0.0.1/tcp/${port}`
    const init = await cli([
      'init',
      '--fleet',
      'walkthrough',
      '--coordinator-state',
      fleet.coordState,
      '--coordinator-addr',
      addr,
    ])
    expect(init.code, init.stderr).toBe(0)
    const coordinatorArgs = ['coordinator', '--state', fleet.coordState, '--json']
    let coordinator = start('coordinator', coordinatorArgs)
    const ready = await coordinator.waitFor((e) => e.event === 'ready', 60_000, 'coordinator ready')
    // the TCP address given to init, and QUIC on the same port beside it
    const quicAddr = addr.replace(/\/tcp\/(\d+)$/, '/udp/$1/quic-v1')
    expect(ready.addrs).toEqual([
      expect.stringMatching(new RegExp(`^${addr}/p2p/`)),
      expect.stringMatching(new RegExp(`^${quicAddr}/p2p/`)),
    ])

    const watch = start('watch', ['--home', fleet.home, 'watch', '--json'])
    const agents: Proc[] = []
    for (const [machine, tag] of [
      ['edge-1', 'lab'],
      ['edge-2', 'shop'],
    ] as const) {
      const enroll = await cli(['enroll', machine, '--tag', tag, '--json'])
      expect(enroll.code, enroll.stderr).toBe(0)
      const { token } = JSON.parse(enroll.stdout) as { token: string }
      const agent = start(`agent ${machine}`, agentArgs(fleet.agentState(machine), ['--token', token]))
      agents.push(agent)
      await agent.waitFor((e) => e.event === 'connected', 60_000, `${machine} connected`)
    }
    await watch.waitFor((e) => e.type !== undefined, 60_000, 'a first watch event')

    // the whole fleet
    const archive = await makeArchive(fleet.dir, { version: 'v1' })
    const all = await cli(
      ['deploy', archive, '--to', 'all', '--generation', 'v1', '--timeout', '2m'],
      180_000,
    )
    expect(all.code, all.stdout + all.stderr).toBe(0)
    expect(all.stdout).toContain('settled: 2 committed, 0 not')
    for (const machine of ['edge-1', 'edge-2'])
      expect(await readFile(join(fleet.currentProfile(machine), 'app/VERSION'), 'utf8')).toBe('v1\n')

    // an unknown tag fails at once, saying what is there (runToCompletion's deadline is far below deploy's 15 min)
    const nope = await cli(['deploy', archive, '--to', 'tag:nope', '--generation', 'v1'], 60_000)
    expect(nope.code).not.toBe(0)
    expect(nope.stderr).toContain('matches no enrolled machine')
    expect(nope.stderr).toContain('tag:lab, tag:shop')

    // the coordinator restarts under a running watch, which carries on
    process.kill(coordinator.child.pid as number, 'SIGTERM')
    expect(await coordinator.exited).toBe(0)
    coordinator = start('coordinator (restarted)', coordinatorArgs)
    await coordinator.waitFor((e) => e.event === 'ready', 60_000, 'restarted coordinator ready')
    await watch.waitFor(
      () => watch.stderr.some((l) => l.includes('reconnected')),
      60_000,
      'watch reconnected',
    )
    const next = await makeArchive(fleet.dir, { version: 'v2' })
    const v2 = await cli(['deploy', next, '--to', 'tag:lab', '--generation', 'v2', '--no-watch', '--json'])
    expect(v2.code, v2.stderr).toBe(0)
    const { rolloutId } = JSON.parse(v2.stdout) as { rolloutId: string }
    await watch.waitFor((e) => e.type === 'manifest' && e.rolloutId === rolloutId, 60_000, 'the v2 rollout')
    await watch.waitFor(
      (e) => {
        const m = e.machine as { name?: string; state?: string; currentGeneration?: string } | undefined
        return (
          e.type === 'status' &&
          m?.name === 'edge-1' &&
          m.state === 'committed' &&
          m.currentGeneration === 'v2'
        )
      },
      120_000,
      'edge-1 committed v2, seen by the watch',
    )

    // stop every daemon by the PID it was started with; nothing it started may be left
    const daemons = [watch, ...agents, coordinator]
    const started = (await Promise.all(daemons.map((d) => processTree(d.child.pid as number)))).flat()
    expect(started.length).toBeGreaterThanOrEqual(daemons.length)
    for (const daemon of daemons) process.kill(daemon.child.pid as number, 'SIGTERM')
    const codes = await Promise.all(daemons.map((d) => d.exited))
    expect(codes.slice(1), 'agents and coordinator exit 0 on SIGTERM').toEqual([0, 0, 0])
    expect(await stillRunning(started)).toEqual([])
    const fromThisInstall = (await processTable()).filter(
      (p) => p.state !== 'Z' && p.cmd.includes(release.dir),
    )
    expect(fromThisInstall).toEqual([])
  }, 420_000)
})
