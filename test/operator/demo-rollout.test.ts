/**
 * `npm run demo:rollout` end to end, as an operator runs it (the script on the
 * pinned Node): ten agents, web-2 halting at its failed canary with the halt
 * audited, web-3 through every wave, watched live; and, ended by Ctrl-C, the
 * demo still leaves no daemon and no temporary state behind.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runToCompletion } from '../../testkit/fleetmesh.ts'

const SCRIPT = resolve(import.meta.dirname, '../../scripts/demo-rollout.ts')

/** The temporary fleet directory the demo announces in its first heading. */
const fleetDir = (stdout: string) => /created in (\S+)/.exec(stdout)?.[1] ?? ''

/** Coordinator and agent daemons of the fleet in `dir` still running. */
async function daemonsOf(dir: string): Promise<string[]> {
  const left: string[] = []
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')
    const daemon = argv.includes('coordinator') || argv.includes('agent')
    if (daemon && argv.some((a) => a.startsWith(dir))) left.push(`${pid}: ${argv.join(' ')}`)
  }
  return left
}

describe('npm run demo:rollout', () => {
  it('halts web-2 at its canary, takes web-3 through every wave, and cleans up', async () => {
    const r = await runToCompletion(process.execPath, [SCRIPT], { timeoutMs: 400_000 })
    const all = r.stdout + r.stderr
    expect(r.code, all).toBe(0)
    expect(r.stdout).toContain('10 agents enrolled and connected')
    // web-2: watched to its halt, shown per wave, and audited with its reason.
    expect(r.stdout).toMatch(/halted: wave 1 of 3: 0 done, 1 failed, 0 pending, 0 skipped, 9 waiting/)
    expect(r.stdout).toMatch(
      /wave 1: edge-\d\d \(failed\)\n {2}wave 2: edge-\d\d \(waiting\), edge-\d\d \(waiting\)/,
    )
    expect(r.stdout).toContain('rollout-halt')
    expect(r.stdout).toMatch(
      /halt reason, as audited: rollout [0-9a-f]{32} halted in wave 1 of 3: 1 of 1 machine\(s\) of wave 1 failed/,
    )
    // web-3: each wave live, as watch prints it (progress on stderr, the end on stdout).
    expect(r.stderr).toMatch(/running: wave 2 of 3: .*7 waiting/)
    expect(r.stderr).toMatch(/running: wave 3 of 3: /)
    expect(r.stdout).toMatch(/done: wave 3 of 3: 10 done, 0 failed, 0 pending, 0 skipped, 0 waiting/)
    expect(r.stdout).toContain('as expected: web-2 halted at its canary, web-3 went through all waves')
    expect(r.stdout).toContain('== stopping processes and removing temporary state')
    const dir = fleetDir(r.stdout)
    expect(dir).not.toBe('')
    expect(existsSync(dir)).toBe(false)
    expect(await daemonsOf(dir)).toEqual([])
  }, 420_000)

  it('stops every process it started and removes its state on Ctrl-C', async () => {
    const child = spawn(process.execPath, [SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<number | null>((done) => child.on('close', done))
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    // Once it enrolls agents, its coordinator runs (and agents start).
    await new Promise<void>((enrolling, failed) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString()
        if (stdout.includes('enrolling ten agents')) enrolling()
      })
      void exited.then(() => failed(new Error(`the demo exited early:\n${stdout}${stderr}`)))
    })
    const dir = fleetDir(stdout)
    expect(await daemonsOf(dir)).not.toEqual([])
    child.kill('SIGINT')
    expect(await exited, stdout + stderr).toBe(130)
    expect(stderr).toContain('demo interrupted (SIGINT)')
    expect(existsSync(dir)).toBe(false)
    expect(await daemonsOf(dir)).toEqual([])
  }, 120_000)
})
