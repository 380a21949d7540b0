import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { acquireDirLock, DirLockError, LOCK_FILE } from '../../lib/dir-lock.ts'

/** The PID of a process that has exited, so certainly not running now. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await new Promise((r) => child.on('exit', r))
  return child.pid as number
}

describe('acquireDirLock', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-lock-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('writes our PID and removes the file on release', async () => {
    const lock = await acquireDirLock(dir, 'fleetmesh test')
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8'))).toEqual({
      pid: process.pid,
      owner: 'fleetmesh test',
    })
    await lock.release()
    await expect(stat(join(dir, LOCK_FILE))).rejects.toThrow()
    await lock.release()
  })

  it('refuses while another running process holds it, naming it and the directory', async () => {
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' })
    try {
      await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: holder.pid, owner: 'fleetmesh agent' }))
      const err = await acquireDirLock(dir, 'fleetmesh agent').catch((e: unknown) => e)
      expect(err).toBeInstanceOf(DirLockError)
      expect((err as DirLockError).code).toBe('held')
      expect((err as DirLockError).pid).toBe(holder.pid)
      expect((err as Error).message).toContain(
        `${dir} is in use by fleetmesh agent (pid ${holder.pid}); stop it first`,
      )
      // the holder's lock is untouched
      expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).toBe(holder.pid)
    } finally {
      holder.kill('SIGKILL')
    }
  })

  it('takes over a stale lock whose PID is gone, and an unreadable one', async () => {
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: await deadPid(), owner: 'fleetmesh agent' }))
    const lock = await acquireDirLock(dir, 'fleetmesh agent')
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid)
    await lock.release()
    await writeFile(join(dir, LOCK_FILE), '')
    const again = await acquireDirLock(dir, 'fleetmesh agent')
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid)
    await again.release()
  })

  it('does not remove a lock another process took after ours was taken over', async () => {
    const lock = await acquireDirLock(dir, 'fleetmesh test')
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: 1, owner: 'someone else' }))
    await lock.release()
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).toBe(1)
  })
})
