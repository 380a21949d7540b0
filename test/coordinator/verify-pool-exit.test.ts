/**
 * An idle report-verifier pool does not keep the process alive: a coordinator
 * that stopped on SIGTERM must exit even after its workers verified reports
 * (it did not: the workers' message listeners, added after `unref()`, held the
 * process, so `fleetmesh coordinator` hung after a clean stop). A child
 * process verifies one report on the pool and then has nothing left to do: it
 * must end on its own, without anyone closing the pool.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { getPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const at = (path: string) => new URL(`../../${path}`, import.meta.url).href
const script = `
import { verifyPool } from '${at('coordinator/verify-pool.ts')}'
import { DOMAINS, PrivateKey } from '${at('keys/index.ts')}'
import { sealEnvelope, statusReportSchema } from '${at('protocol/index.ts')}'
import { sampleStatus } from '${at('testkit/fixtures.ts')}'
const envelope = sealEnvelope(statusReportSchema, DOMAINS.status, sampleStatus(), PrivateKey.generate())
const opened = await verifyPool.open(envelope)
console.log('verified', opened.value.machine)
`

/**
 * A coordinator warms the pool before it listens (coordinator/daemon.ts), so
 * that the first reports after a restart do not wait for the threads to load:
 * the warm-up must hold the process up until every worker answered (with
 * nothing else pending, it exited with "unsettled top-level await"), and must
 * not hold it after.
 */
const warmScript = `
import { readdirSync, readFileSync } from 'node:fs'
import { verifyPool } from '${at('coordinator/verify-pool.ts')}'
await verifyPool.warm()
// each thread's name and nice value (/proc/self/task/<tid>/stat: comm, then the 17th field after it)
const threads = readdirSync('/proc/self/task').map((tid) => {
  const stat = readFileSync('/proc/self/task/' + tid + '/stat', 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { tid, name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), nice: Number(fields[16]) }
})
console.log(JSON.stringify({ warmed: true, pid: process.pid, threads }))
`

async function runScript(source: string): Promise<{ code: number | null; out: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'fm-verify-pool-'))
  const file = join(dir, 'script.ts')
  await writeFile(file, source)
  const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
  })
  const ended = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  // A hang is the failure: the test's own timeout ends it, and the child is killed.
  try {
    return { code: await ended, out }
  } finally {
    child.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  }
}

describe('the report verifier pool', () => {
  it('warms up on request, and still lets the process exit once warm', async () => {
    const { code, out } = await runScript(warmScript)
    expect(code).toBe(0)
    expect(out).toContain('"warmed":true')
  }, 30_000)

  // Under a burst the verifiers must not take the cores from the thread that reads every
  // connection and answers pings: they run niced (Linux), the main thread as it was.
  it.skipIf(process.platform !== 'linux')(
    'runs its verifier threads at nice 10, the main thread unchanged',
    async () => {
      const { out } = await runScript(warmScript)
      const { pid, threads } = JSON.parse(out) as {
        pid: number
        threads: { tid: string; name: string; nice: number }[]
      }
      const main = threads.find((t) => t.tid === String(pid))
      const verifiers = threads.filter((t) => t.name === 'WorkerThread')
      expect(verifiers.length).toBeGreaterThanOrEqual(1)
      const mainNice = main?.nice ?? Number.NaN
      expect(mainNice).toBe(getPriority()) // the child's main thread as it started: as this process
      for (const v of verifiers) expect(v.nice).toBe(Math.max(mainNice, 10))
    },
    30_000,
  )

  it('lets the process exit once it is idle, unclosed', async () => {
    const { code, out } = await runScript(script)
    expect(code).toBe(0)
    expect(out).toContain('verified edge-1')
  }, 30_000)
})
