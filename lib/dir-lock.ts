/**
 * One process per directory: a lock file created with O_EXCL that holds the
 * owner's PID and a name for people. A daemon takes it on start, so a second
 * daemon on the same state directory (two agents with one identity would take
 * the link from each other forever) is refused with a message that names the
 * first one. A lock whose PID no longer runs is left over from a crash and is
 * taken over; so is one holding our own PID (a container's daemon is PID 1 on
 * every start). The file is removed on release and, as a last resort, when the
 * process exits.
 *
 * @example
 *
 * ```ts
 * const lock = await acquireDirLock('/var/lib/fleetmesh', 'fleetmesh agent')
 * try { await runDaemon() } finally { await lock.release() }
 * ```
 */
import { readFileSync, unlinkSync } from 'node:fs'
import { open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { CodedError } from './errors.ts'
import { isProcessRunning } from './process.ts'

export const LOCK_FILE = 'daemon.lock'

/** `held`: another running process owns the directory. */
export class DirLockError extends CodedError<'held'> {
  override name = 'DirLockError'
  /** The PID of the process that holds the lock. */
  readonly pid: number
  constructor(pid: number, message: string) {
    super('held', message)
    this.pid = pid
  }
}

export interface DirLock {
  readonly path: string
  /** Removes the lock file if it is still ours; safe to call twice. */
  release(): Promise<void>
}

interface LockOwner {
  pid: number
  owner: string
}

/**
 * Takes `<dir>/daemon.lock` for this process, `owner` naming it in the message a
 * second process gets ("… is in use by fleetmesh agent (pid 1234); stop it first").
 * The directory must exist.
 */
export async function acquireDirLock(dir: string, owner: string): Promise<DirLock> {
  const path = join(dir, LOCK_FILE)
  const mine: LockOwner = { pid: process.pid, owner }
  // A few rounds: a stale lock removed here may be re-created by a racing starter.
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const file = await open(path, 'wx', 0o644)
      try {
        await file.writeFile(`${JSON.stringify(mine)}\n`)
      } finally {
        await file.close()
      }
      return heldLock(path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const other = await readOwner(path)
    if (other !== undefined && other.pid !== process.pid && isProcessRunning(other.pid))
      throw new DirLockError(
        other.pid,
        `${dir} is in use by ${other.owner} (pid ${other.pid}); stop it first, or give this one another directory`,
      )
    // Left over from a crash (or unreadable, written by a process that died while writing it).
    await unlink(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
  }
  throw new Error(`could not take ${path}: other processes keep creating it`)
}

function heldLock(path: string): DirLock {
  let released = false
  const ours = (text: string) => parseOwner(text)?.pid === process.pid
  // A daemon that exits without stop() (process.exit on a fatal error) must not leave its lock behind.
  const onExit = () => {
    try {
      if (ours(readFileSync(path, 'utf8'))) unlinkSync(path)
    } catch {
      // already gone
    }
  }
  process.once('exit', onExit)
  return {
    path,
    async release() {
      if (released) return
      released = true
      process.removeListener('exit', onExit)
      const text = await readFile(path, 'utf8').catch(() => '')
      if (ours(text))
        await unlink(path).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err
        })
    },
  }
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    return parseOwner(await readFile(path, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>
    if (typeof value.pid === 'number' && Number.isInteger(value.pid) && value.pid > 0)
      return { pid: value.pid, owner: typeof value.owner === 'string' ? value.owner : 'another process' }
  } catch {
    // not JSON: treated as stale
  }
  return undefined
}
