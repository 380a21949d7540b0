/**
 * NixOS deploys end to end with real processes and real Nix: a coordinator,
 * agents with the nixos activator (each with its own profile, never the
 * machine's system profile), and the admin CLI pushing closures from the local
 * Nix store. Agents and the admin share this machine's /nix/store, so a test
 * that needs an agent to fetch deletes the closure from the store after the
 * push. Switch calls are recorded by the fake systems' switch-to-configuration.
 */
import { execFileSync } from 'node:child_process'
import { readFile, readlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Proc, TestFleet, waitForFile } from '../../testkit/harness.ts'
import {
  buildFakeSystem,
  closureOf,
  deleteFromStore,
  isValid,
  nixEnv,
  nixUnavailable,
} from '../../testkit/nix/index.ts'

const unavailable = nixUnavailable()
if (unavailable !== undefined) console.warn(`NixOS deploy tests skipped: ${unavailable}`)

const RUN = Math.random().toString(36).slice(2, 8)
const tag = (name: string) => `${name}-${RUN}`

interface MachineLog {
  state: string | null
  error: { code: string; message: string } | null
  log: string | null
  rebootRequired: boolean
}

describe.skipIf(unavailable !== undefined)('NixOS deploys through real processes', () => {
  let fleet: TestFleet
  const agents = new Map<string, Proc>()

  const profile = (m: string) => fleet.nixProfile(m)
  const switchLog = (m: string) => fleet.switchLog(m)
  const gate = (m: string) => join(fleet.dir, `${m}.gate`)
  const switches = async (m: string): Promise<string[]> =>
    (await readFile(switchLog(m), 'utf8').catch(() => '')).split('\n').filter(Boolean)
  /** The store path the machine's profile points at, or null before its first switch. */
  const profileTarget = async (m: string): Promise<string | null> => {
    const link = await readlink(profile(m)).catch(() => null)
    return link === null ? null : readlink(join(profile(m), '..', link))
  }

  async function enroll(m: string, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    const agent = await fleet.startNixosAgent(m, await fleet.token(m, ['nixos']), env)
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${m} connected`)
    agents.set(m, agent)
    return agent
  }

  async function restart(m: string, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    const agent = await fleet.startNixosAgent(m, undefined, env)
    agents.set(m, agent)
    return agent
  }

  const deploy = (args: string[], timeoutMs = 120_000) =>
    fleet.cli(['deploy', ...args, '--confirm-timeout', '5s', '--timeout', '90s'], timeoutMs)

  async function machineLog(m: string): Promise<MachineLog> {
    return fleet.json<MachineLog>(['log', m])
  }

  /** Pushes a closure, then removes it from the local store so that the agent has to fetch it. */
  async function pushAndForget(path: string): Promise<string[]> {
    const r = await fleet.cli(['nix', 'push', path])
    expect(r.code, r.stderr).toBe(0)
    const closure = await closureOf(path)
    await deleteFromStore(closure)
    return closure
  }

  beforeAll(async () => {
    fleet = await TestFleet.create()
    await fleet.startCoordinator()
    const keygen = await fleet.cli(['nix', 'keygen'])
    expect(keygen.code, keygen.stderr).toBe(0)
    for (const m of ['edge-1', 'edge-2', 'edge-3']) await enroll(m)
  }, 120_000)

  afterAll(async () => {
    await fleet?.stop()
  })

  it('switch: the profile points at the closure and switch-to-configuration ran, its output in the log', async () => {
    const path = await buildFakeSystem({ tag: tag('sw'), deps: 2, shared: RUN })
    const r = await deploy(['--nix', path, '--to', 'edge-1', '--mode', 'switch'])
    expect(r.code, r.stderr + r.stdout).toBe(0)
    expect(await profileTarget('edge-1')).toBe(path)
    expect(await switches('edge-1')).toEqual([`${path} switch`])
    const log = await machineLog('edge-1')
    expect(log.state).toBe('committed')
    expect(log.log).toContain(`switching to ${tag('sw')} (switch)`)
  })

  it('test: switch-to-configuration test runs and the profile is left alone; boot says a reboot is needed', async () => {
    const before = await profileTarget('edge-1')
    const path = await buildFakeSystem({ tag: tag('test') })
    const r = await deploy(['--nix', path, '--to', 'edge-1', '--mode', 'test'])
    expect(r.code, r.stderr + r.stdout).toBe(0)
    expect(await profileTarget('edge-1')).toBe(before)
    expect((await switches('edge-1')).at(-1)).toBe(`${path} test`)

    const boot = await buildFakeSystem({ tag: tag('boot') })
    expect((await deploy(['--nix', boot, '--to', 'edge-1', '--mode', 'boot'])).code).toBe(0)
    expect(await profileTarget('edge-1')).toBe(boot)
    expect((await switches('edge-1')).at(-1)).toBe(`${boot} boot`)
    const log = await machineLog('edge-1')
    expect(log.rebootRequired).toBe(true)
    const machines = await fleet.cli(['machines'])
    expect(machines.stdout).toContain('reboot required')
  })

  it('fetches only the paths missing on the device', async () => {
    const path = await buildFakeSystem({ tag: tag('partial'), deps: 4 })
    const closure = await closureOf(path)
    expect(closure).toHaveLength(5)
    const r = await fleet.cli(['nix', 'push', path])
    expect(r.code, r.stderr).toBe(0)
    // the device keeps two dependencies; the top path and two others must come over the mesh
    const deps = closure.filter((p) => p !== path)
    await deleteFromStore([path, deps[0] as string, deps[1] as string])
    expect(await isValid(deps[2] as string)).toBe(true)
    const d = await deploy(['--nix', path, '--to', 'edge-2', '--mode', 'switch'])
    expect(d.code, d.stderr + d.stdout).toBe(0)
    expect(await profileTarget('edge-2')).toBe(path)
    expect((await machineLog('edge-2')).log).toMatch(/fetched 3 of 5 paths/)
  })

  it('a closure signed by a key the manifest does not trust is refused and nothing is switched', async () => {
    const path = await buildFakeSystem({ tag: tag('untrusted') })
    await pushAndForget(path) // signed by the admin's first key
    const keygen = await fleet.cli(['nix', 'keygen', '--force', '--name', `second-${RUN}`])
    expect(keygen.code, keygen.stderr).toBe(0)
    const before = await profileTarget('edge-2')
    const calls = (await switches('edge-2')).length
    const r = await deploy(['--nix', path, '--to', 'edge-2', '--mode', 'switch'])
    const log = await machineLog('edge-2')
    expect(r.code).not.toBe(0)
    expect(log.state).toBe('failed')
    expect(log.error?.code).toBe('untrusted-path')
    expect(log.error?.message).toContain(path.slice(0, 44))
    expect(await profileTarget('edge-2')).toBe(before)
    expect(await switches('edge-2')).toHaveLength(calls)
  })

  it('a tampered NAR in the coordinator is refused and nothing is switched', async () => {
    const path = await buildFakeSystem({ tag: tag('tamper') })
    const closure = await closureOf(path)
    const r = await fleet.cli(['nix', 'push', path])
    expect(r.code, r.stderr).toBe(0)
    // flip a byte in the NAR of the top path as the coordinator stores it
    const info = JSON.parse(
      execFileSync('nix', ['path-info', '--json', path], { env: nixEnv(), encoding: 'utf8' }),
    ) as { narHash: string }[]
    const sri = info[0]?.narHash as string
    const hex = Buffer.from(sri.replace(/^sha256-/, ''), 'base64').toString('hex')
    const blob = join(fleet.coordState, 'blobs', hex)
    const bytes = await readFile(blob)
    bytes[bytes.length - 20] = (bytes[bytes.length - 20] as number) ^ 0xff
    await writeFile(blob, bytes)
    await deleteFromStore(closure)
    const before = await profileTarget('edge-2')
    const calls = (await switches('edge-2')).length
    const d = await deploy(['--nix', path, '--to', 'edge-2', '--mode', 'switch'])
    expect(d.code).not.toBe(0)
    const log = await machineLog('edge-2')
    expect(log.state).toBe('failed')
    expect(`${log.error?.message}\n${log.log}`).toMatch(/does not match its hash|hash mismatch/)
    expect(await profileTarget('edge-2')).toBe(before)
    expect(await switches('edge-2')).toHaveLength(calls)
    expect(await isValid(path)).toBe(false)
  })

  it('switch-to-configuration failing rolls back to the previous generation, switched again', async () => {
    const good = await profileTarget('edge-1')
    const bad = await buildFakeSystem({ tag: tag('fails'), fail: true })
    const r = await deploy(['--nix', bad, '--to', 'edge-1', '--mode', 'switch'])
    expect(r.code).not.toBe(0)
    const log = await machineLog('edge-1')
    expect(log.state).toBe('rolled-back')
    expect(log.error?.code).toBe('activation-failed')
    expect(log.log).toContain('failed on purpose')
    expect(await profileTarget('edge-1')).toBe(good)
    expect((await switches('edge-1')).slice(-1)).toEqual([`${good} switch`])
  })

  it('a failing health check rolls back', async () => {
    const good = await profileTarget('edge-1')
    const path = await buildFakeSystem({ tag: tag('unhealthy') })
    const r = await deploy(['--nix', path, '--to', 'edge-1', '--mode', 'switch', '--health-check', 'false'])
    expect(r.code).not.toBe(0)
    const log = await machineLog('edge-1')
    expect(log.state).toBe('rolled-back')
    expect(await profileTarget('edge-1')).toBe(good)
    expect((await switches('edge-1')).slice(-2)).toEqual([`${path} switch`, `${good} switch`])
  })

  it('rolls back by itself when the coordinator is unreachable after the switch', async () => {
    const good = await profileTarget('edge-3')
    const path = await buildFakeSystem({ tag: tag('cutoff') })
    const go = join(fleet.dir, 'health.go')
    // the health check holds the update after the switch until the test has stopped the coordinator
    const script = join(fleet.dir, 'hold.sh')
    await writeFile(script, `while [ ! -e ${go} ]; do sleep 0.05; done\n`)
    const health = `/bin/sh ${script}`
    const r = await deploy([
      '--nix',
      path,
      '--to',
      'edge-3',
      '--mode',
      'switch',
      '--health-check',
      health,
      '--no-watch',
    ])
    expect(r.code, r.stderr).toBe(0)
    await fleet.coordinator?.waitFor(
      (e) => e.event === 'status' && e.machine === 'edge-3' && e.state === 'activating',
      60_000,
      'edge-3 activating',
    )
    await fleet.coordinator?.kill('SIGKILL')
    await writeFile(go, '')
    const agent = agents.get('edge-3') as Proc
    await agent.waitFor(
      (e) => e.event === 'status' && e.state === 'rolled-back',
      60_000,
      'edge-3 rolled back',
    )
    expect((await switches('edge-3')).at(-1)).toBe(good === null ? `${path} switch` : `${good} switch`)
    if (good !== null) expect(await profileTarget('edge-3')).toBe(good)
    await fleet.startCoordinator()
    await agent.waitFor((e) => e.event === 'connected', 30_000, 'edge-3 reconnected')
  })

  it('kill -9 of the agent during the switch ends on a whole generation after restart', async () => {
    const good = await profileTarget('edge-2')
    const path = await buildFakeSystem({ tag: tag('killed') })
    // this run of the agent holds every switch at the gate
    await agents.get('edge-2')?.kill('SIGKILL')
    const held = await restart('edge-2', { FLEETMESH_FAKE_SWITCH_GATE: gate('edge-2') })
    await held.waitFor((e) => e.event === 'connected', 30_000, 'edge-2 connected')
    const r = await deploy(['--nix', path, '--to', 'edge-2', '--mode', 'switch', '--no-watch'])
    expect(r.code, r.stderr).toBe(0)
    await waitForFile(switchLog('edge-2'), (text) => text.includes(`${path} switch waiting`), 60_000)
    await held.kill('SIGKILL')
    // let the orphaned switch finish: the profile may point at either generation now
    await writeFile(gate('edge-2'), '')
    const recovered = await restart('edge-2')
    await recovered.waitFor((e) => e.event === 'status' && e.state === 'rolled-back', 60_000, 'recovered')
    expect(await profileTarget('edge-2')).toBe(good)
    const calls = await switches('edge-2')
    expect(calls.lastIndexOf(`${good} switch`)).toBeGreaterThan(calls.indexOf(`${path} switch waiting`))
  })

  it('deploys a map of three machines with different closures as one rollout', async () => {
    const paths = await Promise.all(
      ['m1', 'm2', 'm3'].map((t) => buildFakeSystem({ tag: tag(t), shared: RUN })),
    )
    const map = join(fleet.dir, 'map.json')
    await writeFile(map, JSON.stringify({ 'edge-1': paths[0], 'edge-2': paths[1], 'edge-3': paths[2] }))
    const r = await deploy(['--nix-map', map, '--mode', 'switch'])
    expect(r.code, r.stderr + r.stdout).toBe(0)
    expect(await profileTarget('edge-1')).toBe(paths[0])
    expect(await profileTarget('edge-2')).toBe(paths[1])
    expect(await profileTarget('edge-3')).toBe(paths[2])
    const machines = await fleet.json<{ name: string; rolloutId: string | null }[]>(['machines'])
    const rollouts = new Set(machines.filter((m) => m.name.startsWith('edge-')).map((m) => m.rolloutId))
    expect(rollouts.size).toBe(1)
  })

  describe('bad input: a clear error and nothing switched', () => {
    it('a malformed store path, a closure in no substituter, an unknown machine in a map', async () => {
      const malformed = await deploy(['--nix', '/nix/store/not-a-store-path', '--to', 'edge-1'])
      expect(malformed.code).not.toBe(0)
      expect(malformed.stderr).toMatch(/store path/)

      const orphan = await buildFakeSystem({ tag: tag('orphan') })
      await deleteFromStore(await closureOf(orphan))
      const missing = await deploy(['--nix', orphan, '--to', 'edge-1'])
      expect(missing.code).not.toBe(0)
      expect(missing.stderr).toMatch(/neither in the local Nix store nor complete in the coordinator's cache/)

      const desired = async () =>
        (await fleet.json<{ name: string; desiredManifestId: string | null }[]>(['machines'])).map(
          (m) => `${m.name}=${m.desiredManifestId}`,
        )
      const desiredBefore = await desired()
      const map = join(fleet.dir, 'unknown.json')
      await writeFile(map, JSON.stringify({ 'edge-1': orphan, 'edge-99': orphan }))
      const unknown = await deploy(['--nix-map', map])
      expect(unknown.code).not.toBe(0)
      expect(unknown.stderr).toMatch(/unknown machines: edge-99/)
      // nothing was signed or submitted: every machine still wants what it wanted before
      expect(await desired()).toEqual(desiredBefore)
    })

    it('no Nix on the device: the agent runs and reports, the update fails saying so', async () => {
      const empty = join(fleet.dir, 'empty-bin')
      execFileSync('mkdir', ['-p', empty])
      await enroll('no-nix', { PATH: empty })
      const path = await buildFakeSystem({ tag: tag('nonix') })
      const r = await deploy(['--nix', path, '--to', 'no-nix'])
      expect(r.code).not.toBe(0)
      const log = await machineLog('no-nix')
      expect(log.state).toBe('failed')
      expect(log.error?.code).toBe('nix-unavailable')
      expect(log.error?.message).toMatch(/this device has no Nix/)
    })

    it('a full disk while fetching', async () => {
      await enroll('small-disk')
      const nars = join(fleet.agentState('small-disk'), 'nix', 'nars')
      execFileSync('mkdir', ['-p', nars])
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', nars])
      try {
        const path = await buildFakeSystem({ tag: tag('big'), deps: 3, kb: 1024 })
        await pushAndForget(path)
        const r = await deploy(['--nix', path, '--to', 'small-disk'])
        expect(r.code).not.toBe(0)
        const log = await machineLog('small-disk')
        expect(log.state).toBe('failed')
        expect(log.error?.code).toBe('no-space')
        expect(await isValid(path)).toBe(false)
        await expect(readlink(profile('small-disk'))).rejects.toThrow()
      } finally {
        await agents.get('small-disk')?.kill('SIGKILL')
        execFileSync('umount', ['-l', nars])
      }
    })
  })
})
