/**
 * bin/fleetmesh.js on an old Node re-executes itself on the pinned Node 24: the
 * launcher must stand in for the daemon it started (signals forwarded, exit code
 * passed back) and never leave it running on its own.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { BIN } from '../../testkit/fleetmesh.ts'

const OLD_NODE = '/usr/bin/node'

function oldNodeMajor(): number | undefined {
  if (!existsSync(OLD_NODE)) return undefined
  const version = execFileSync(OLD_NODE, ['--version'], { encoding: 'utf8' })
  return Number(version.trim().replace(/^v/, '').split('.')[0])
}

const major = oldNodeMajor()
const usable = major !== undefined && major < 24
if (!usable)
  console.warn(
    `launcher tests skipped: ${OLD_NODE} is ${major === undefined ? 'missing' : `Node ${major}`}, the re-exec needs Node < 24`,
  )

/** PIDs of live processes whose command line mentions `needle` (the state directory). */
async function processesMentioning(needle: string): Promise<number[]> {
  const found: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.includes(needle) && (await isLive(Number(name)))) found.push(Number(name))
  }
  return found
}

/** A zombie (exited, not yet reaped) counts as gone. */
async function isLive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  return stat !== '' && !/\) Z /.test(stat)
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await cond()) return true
    await new Promise((r) => setTimeout(r, 100))
  }
  return cond()
}

interface Launched {
  child: ChildProcess
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  ready: Promise<void>
}

function launchRelay(state: string): Launched {
  const child = spawn(
    OLD_NODE,
    [
      BIN,
      'relay',
      '--state',
      state,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--observer-ports',
      'none',
      '--json',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  )
  const ready = new Promise<void>((resolveReady, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"event":"ready"')) resolveReady()
    })
    void exited.then(({ code }) => reject(new Error(`launcher exited (${code}) before ready: ${stderr}`)))
  })
  return { child, exited, ready }
}

describe.skipIf(!usable)('bin/fleetmesh.js on an old Node', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-launcher-'))
  })
  afterEach(async () => {
    for (const pid of await processesMentioning(dir)) process.kill(pid, 'SIGKILL')
    await rm(dir, { recursive: true, force: true })
  })

  it('forwards SIGTERM to the daemon and leaves nothing running', async () => {
    const state = join(dir, 'relay')
    const relay = launchRelay(state)
    await relay.ready
    expect((await processesMentioning(state)).length).toBe(2) // the launcher and the daemon
    relay.child.kill('SIGTERM')
    const { code } = await relay.exited
    expect(code).toBe(0) // the daemon's clean stop, passed back
    expect(await waitUntil(async () => (await processesMentioning(state)).length === 0, 5_000)).toBe(true)
  }, 60_000)

  it('the daemon does not outlive a launcher killed with SIGKILL', async () => {
    const state = join(dir, 'relay')
    const relay = launchRelay(state)
    await relay.ready
    relay.child.kill('SIGKILL')
    await relay.exited
    expect(await waitUntil(async () => (await processesMentioning(state)).length === 0, 15_000)).toBe(true)
  }, 60_000)

  it('ends by the signal that ended the daemon', async () => {
    const state = join(dir, 'relay')
    const relay = launchRelay(state)
    await relay.ready
    const daemon = (await processesMentioning(state)).find((pid) => pid !== relay.child.pid)
    expect(daemon).toBeDefined()
    process.kill(daemon as number, 'SIGKILL')
    expect(await relay.exited).toEqual({ code: null, signal: 'SIGKILL' })
  }, 60_000)

  it("passes a failing command's exit code back", async () => {
    const child = spawn(OLD_NODE, [BIN, 'relay', '--no-such-option'], { stdio: 'ignore' })
    const code = await new Promise((r) => child.on('exit', (c) => r(c)))
    expect(code).toBe(2)
  }, 60_000)
})
