/**
 * Rollouts in waves with real processes: a coordinator, agents and the admin
 * CLI. The release's health check fails on purpose on chosen machines (by the
 * hook log path each agent passes on), and a gate file holds a canary in its
 * activation so the test can act mid-wave without racing it.
 */
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeTar, sh } from '../../testkit/archives.ts'
import { type Event, type Proc, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
beforeEach(async () => {
  fleet = await TestFleet.create()
})
afterEach(async () => {
  await fleet.stop()
})

const isStatus = (state: string, generation: string) => (e: Event) =>
  e.event === 'status' && e.state === state && e.desiredGeneration === generation

/** An app archive whose health check fails on `failOn` machines and whose activation waits for `gate`. */
async function app(version: string, opts: { failOn?: string[]; gate?: string } = {}): Promise<string> {
  const wait = opts.gate === undefined ? '' : `while [ ! -e "${opts.gate}" ]; do sleep 0.1; done\n`
  const fail = (opts.failOn ?? []).map((m) => `*/${m}.activations.log) exit 3 ;;`).join('\n')
  const archive = await makeTar(fleet.dir, {
    'app/VERSION': `${version}\n`,
    activate: sh(`set -e\n${wait}echo "${version}" >> "$FM_TEST_LOG"`),
    health: sh(`case "$FM_TEST_LOG" in\n${fail}\nesac\nexit 0`),
  })
  return archive.path
}

async function activations(machine: string): Promise<string[]> {
  const path = fleet.activationLog(machine)
  return existsSync(path) ? (await readFile(path, 'utf8')).trim().split('\n') : []
}

interface View {
  rolloutId: string
  state: string
  reason: string | null
  wave: number
  counts: Record<string, number>
  machines: { name: string; wave: number; outcome: string }[]
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `edge-${String(i + 1).padStart(2, '0')}`)

async function enroll(machines: string[], tagged: string[] = []): Promise<Map<string, Proc>> {
  const agents = new Map<string, Proc>()
  // In turn: ten enrollments at once would only fight over two cores.
  for (const m of machines)
    agents.set(m, await fleet.enrollAgent(m, tagged.includes(m) ? ['canary'] : [], fleet.activationEnv(m)))
  return agents
}

const WAVES = ['--waves', '1,100%', '--canary-tag', 'canary', '--health-check', './health']

describe('rollouts in waves', () => {
  it('halts when the canary fails: nothing beyond the canary changes, and the halt is audited', async () => {
    await fleet.startCoordinator()
    const machines = names(10)
    await enroll(machines, ['edge-01'])
    const release = await app('v2', { failOn: ['edge-01'] })
    const r = await fleet.deploy(release, 'all', 'v2', [...WAVES, '--health-retries', '0', '--json'])
    expect(r.code, r.stderr).toBe(5)
    const view = JSON.parse(r.stdout) as View
    expect(view.state).toBe('halted')
    expect(view.reason).toMatch(/1 of 1 machine\(s\) of wave 1 failed/)
    expect(view.machines.filter((m) => m.wave === 0).map((m) => m.name)).toEqual(['edge-01'])
    // The canary activated v2 and was rolled back by its agent; no other machine got it.
    expect(await activations('edge-01')).toEqual(['v2'])
    const rows = await fleet.json<{ name: string; desiredGeneration: string | null }[]>(['machines'])
    for (const m of machines.slice(1)) {
      expect(await activations(m)).toEqual([])
      expect(rows.find((x) => x.name === m)?.desiredGeneration).toBeNull()
    }
    const audit = await fleet.cli(['audit', '--verify'])
    expect(audit.code, audit.stderr).toBe(0)
    expect(audit.stdout).toContain('rollout-halt')
    expect(audit.stdout).toContain('submit-waves')
  }, 300_000)

  it('--on-failure rollback sends the previous generation to the machines of started waves', async () => {
    await fleet.startCoordinator()
    const agents = await enroll(['edge-01', 'edge-02', 'edge-03'], ['edge-01', 'edge-02'])
    expect((await fleet.deploy(await app('v1'), 'all', 'v1')).code).toBe(0)
    const release = await app('v2', { failOn: ['edge-02'] })
    // Its events from the v1 deploy include a v1 commit: only later ones tell it came back.
    const canary = agents.get('edge-01') as Proc
    const before = canary.events.length
    const r = await fleet.deploy(release, 'all', 'v2', [
      ...WAVES,
      '--health-retries',
      '0',
      '--on-failure',
      'rollback',
    ])
    expect(r.code, r.stderr).toBe(5)
    expect(r.stdout).toContain('halted')
    // edge-01 took part in the canary wave: whatever it made of v2, the held v1 manifest brings it back.
    const back = (e: Event) => canary.events.indexOf(e) >= before && isStatus('committed', 'v1')(e)
    await canary.waitFor(back, 60_000, 'edge-01 back on v1')
    expect((await activations('edge-01')).at(-1)).toBe('v1')
    expect(await activations('edge-03')).toEqual(['v1'])
    const rows = await fleet.json<{ name: string; currentGeneration: string | null }[]>(['machines'])
    expect(rows.map((m) => m.currentGeneration)).toEqual(['v1', 'v1', 'v1'])
  }, 180_000)

  it('pauses and resumes: no wave starts while paused', async () => {
    await fleet.startCoordinator()
    const agents = await enroll(['edge-01', 'edge-02'], ['edge-01'])
    const gate = join(fleet.dir, 'gate')
    const r = await fleet.deploy(await app('v2', { gate }), 'all', 'v2', [...WAVES, '--no-watch', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const { rolloutId } = JSON.parse(r.stdout) as { rolloutId: string }
    const paused = await fleet.json<View>(['rollout', 'pause', rolloutId])
    expect(paused.state).toBe('paused')
    await writeFile(gate, '')
    await agents.get('edge-01')?.waitFor(isStatus('committed', 'v2'), 60_000, 'canary committed')
    const show = await fleet.json<View>(['rollout', 'show', rolloutId])
    expect(show.state).toBe('paused')
    expect(show.wave).toBe(0)
    expect(show.machines.find((m) => m.name === 'edge-02')?.outcome).toBe('waiting')
    expect((await fleet.json<View>(['rollout', 'resume', rolloutId])).state).toBe('running')
    await agents.get('edge-02')?.waitFor(isStatus('committed', 'v2'), 60_000, 'edge-02 committed')
    const list = await fleet.json<View[]>(['rollout', 'list'])
    expect(list.map((v) => v.rolloutId)).toEqual([rolloutId])
    const audit = await fleet.cli(['audit'])
    expect(audit.stdout).toContain('rollout-control')
  }, 180_000)

  it('resumes where it was after the coordinator is killed (kill -9) mid-wave', async () => {
    const coordinator = await fleet.startCoordinator()
    const agents = await enroll(['edge-01', 'edge-02'], ['edge-01'])
    const gate = join(fleet.dir, 'gate')
    const r = await fleet.deploy(await app('v2', { gate }), 'all', 'v2', [...WAVES, '--no-watch', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const { rolloutId } = JSON.parse(r.stdout) as { rolloutId: string }
    await agents.get('edge-01')?.waitFor((e) => e.event === 'status' && e.state === 'verified', 60_000)
    await coordinator.kill('SIGKILL')
    await fleet.startCoordinator()
    await writeFile(gate, '')
    await agents.get('edge-01')?.waitFor(isStatus('committed', 'v2'), 60_000, 'canary committed')
    await agents.get('edge-02')?.waitFor(isStatus('committed', 'v2'), 60_000, 'wave 2 after the restart')
    const follow = await fleet.cli(['rollout', 'show', rolloutId, '--watch', '--json'])
    expect(follow.code, follow.stderr).toBe(0)
    expect((JSON.parse(follow.stdout) as View).counts.done).toBe(2)
  }, 180_000)

  it('counts a machine offline past --offline-timeout as skipped, and updates it when it returns', async () => {
    await fleet.startCoordinator()
    const agents = await enroll(['edge-01', 'edge-02'])
    await agents.get('edge-02')?.kill('SIGTERM')
    const r = await fleet.deploy(await app('v2'), 'all', 'v2', [
      '--waves',
      '100%',
      '--offline-timeout',
      '2s',
      '--json',
    ])
    expect(r.code, r.stderr).toBe(0)
    const view = JSON.parse(r.stdout) as View
    expect(view.state).toBe('done')
    expect(view.counts).toMatchObject({ done: 1, skipped: 1 })
    const back = fleet.startAgent('edge-02', [], fleet.activationEnv('edge-02'))
    await back.waitFor(isStatus('committed', 'v2'), 60_000, 'edge-02 updated on return')
  }, 180_000)
})
