import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { HealthCheckError, runHealthCheck } from '../../agent/health.ts'
import { runProcess } from '../../lib/index.ts'
import { isAlive, removeDir, tempDir, waitFor } from './fixtures.ts'

describe('health checks', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(() => removeDir(dir))

  it('passes on exit 0, runs argv without a shell in cwd', async () => {
    const r = await runHealthCheck(
      {
        command: ['sh', '-c', 'pwd > out; echo "$1"', 'sh', '$HOME;not-expanded'],
        timeoutMs: 5000,
        retries: 0,
        intervalMs: 0,
      },
      { cwd: dir },
    )
    expect(r.attempts).toBe(1)
    expect(r.result.output.trim()).toBe('$HOME;not-expanded')
    expect((await readFile(join(dir, 'out'), 'utf8')).trim()).toBe(dir)
  })

  it('retries, then fails with the exit status and output', async () => {
    const err = await runHealthCheck(
      {
        command: ['sh', '-c', 'echo attempt >> log; echo not ready >&2; exit 3'],
        timeoutMs: 5000,
        retries: 2,
        intervalMs: 10,
      },
      { cwd: dir },
    ).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(HealthCheckError)
    expect((err as HealthCheckError).attempts).toBe(3)
    expect((err as HealthCheckError).message).toMatch(/exited with status 3; output: not ready/)
    expect((await readFile(join(dir, 'log'), 'utf8')).split('\n').filter(Boolean)).toHaveLength(3)
  })

  it('succeeds on a later attempt', async () => {
    const r = await runHealthCheck(
      {
        command: ['sh', '-c', 'echo x >> n; [ "$(wc -l < n)" -ge 2 ]'],
        timeoutMs: 5000,
        retries: 3,
        intervalMs: 0,
      },
      { cwd: dir },
    )
    expect(r.attempts).toBe(2)
  })

  it('kills the whole process group on timeout', async () => {
    const pidFile = join(dir, 'pid')
    const err = await runHealthCheck(
      {
        command: ['sh', '-c', `sleep 30 & echo $! > ${pidFile}; wait`],
        timeoutMs: 300,
        retries: 0,
        intervalMs: 0,
      },
      { cwd: dir },
    ).catch((e: unknown) => e)
    expect((err as HealthCheckError).last.timedOut).toBe(true)
    expect((err as HealthCheckError).message).toMatch(/timed out/)
    const pid = Number(await readFile(pidFile, 'utf8'))
    await waitFor(async () => !(await isAlive(pid)), 'the background sleep to die', 5000)
  })

  it('reports a command that cannot be started', async () => {
    const r = await runProcess(['./does-not-exist'], { cwd: dir, timeoutMs: 1000 })
    expect(r.code).toBeNull()
    expect(r.spawnError).toMatch(/ENOENT/)
  })
})
