/**
 * A private, throwaway PostgreSQL cluster for tests: initdb into a temporary
 * directory, the server listening on a Unix socket in that directory only (no
 * TCP), fsync left on, and a fresh database per test. PostgreSQL refuses to run
 * as root, so as root the cluster belongs to the `postgres` OS user (initdb
 * through runuser, the server spawned with its uid so that signals reach it);
 * as anyone else it runs as that user. Where there is no server to run,
 * {@link postgresUnavailable} says why, and the PostgreSQL variants of the
 * store's tests skip with that reason.
 *
 * @example
 *
 * ```ts
 * const cluster = await startPostgres()
 * const url = await cluster.createDatabase() // postgres://postgres@/fm_1?host=/tmp/fm-pg-…
 * // …
 * await cluster.stop()
 * ```
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { describeResult, runProcess } from '../lib/index.ts'

const PG_ROOT = '/usr/lib/postgresql'

/** The newest installed server's bin directory, if any. */
function serverBin(): string | undefined {
  if (!existsSync(PG_ROOT)) return undefined
  const versions = readdirSync(PG_ROOT)
    .filter((v) => existsSync(join(PG_ROOT, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] === undefined ? undefined : join(PG_ROOT, versions[0], 'bin')
}

/** The uid and gid of the `postgres` OS user, as root runs the server under it. */
function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
    return { uid, gid }
  } catch {
    return undefined
  }
}

const isRoot = () => process.getuid?.() === 0

/** Why no test cluster can run here, or undefined when one can. */
export function postgresUnavailable(): string | undefined {
  if (serverBin() === undefined)
    return `no PostgreSQL server under ${PG_ROOT}/*/bin/postgres (install Debian's postgresql)`
  if (isRoot() && postgresUser() === undefined)
    return 'running as root, and there is no postgres OS user to run the server as'
  return undefined
}

export interface PgCluster {
  /** The directory of the server's Unix socket. */
  readonly socketDir: string
  /** The URL of database `name` over the socket. */
  url(name: string): string
  /** Creates an empty database (from template0) and returns its URL. */
  createDatabase(): Promise<string>
  /**
   * Stops the server (fast shutdown: every session is ended) and starts it
   * again on the same data; `whileDown` runs in between.
   */
  restart(whileDown?: () => Promise<void>): Promise<void>
  /** Stops the server (fast shutdown) and removes its directory. */
  stop(): Promise<void>
}

/** The argv that runs a server program as the user the cluster belongs to. */
function asOwner(argv: string[]): string[] {
  return isRoot() ? ['runuser', '-u', 'postgres', '--', ...argv] : argv
}

let counter = 0

export async function startPostgres(): Promise<PgCluster> {
  const unavailable = postgresUnavailable()
  if (unavailable !== undefined) throw new Error(`cannot start PostgreSQL: ${unavailable}`)
  const bin = serverBin() as string
  const dir = await mkdtemp(join(tmpdir(), 'fm-pg-'))
  const data = join(dir, 'data')
  if (isRoot()) {
    const owner = postgresUser() as { uid: number; gid: number }
    await chown(dir, owner.uid, owner.gid)
  }
  await chmod(dir, 0o700)
  const init = asOwner([join(bin, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8'])
  const result = await runProcess(init, { cwd: dir, timeoutMs: 120_000, env: { ...process.env, LANG: 'C' } })
  if (result.code !== 0) {
    await rm(dir, { recursive: true, force: true })
    throw new Error(describeResult(init, result))
  }
  // Spawned as the owner directly rather than through runuser, so a signal reaches the server itself.
  const argv = ['-D', data, '-k', dir, '-c', 'listen_addresses=']
  // fsync on, as in production: a test of durability must not pass on a server that skips it.
  argv.push('-c', 'fsync=on', '-c', 'synchronous_commit=on', '-c', 'max_connections=200')
  // Commit times let a test check the order transactions committed in (manifest sequences).
  argv.push('-c', 'track_commit_timestamp=on')
  const spawnServer = () =>
    spawn(join(bin, 'postgres'), argv, {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(isRoot() ? (postgresUser() as { uid: number; gid: number }) : {}),
    })
  let server = spawnServer()
  try {
    await ready(server)
  } catch (err) {
    server.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  const shutdown = async () => {
    if (server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGINT') // fast shutdown: ends sessions, checkpoints, exits
      await exited
    }
  }
  const url = (name: string) => `postgres://postgres@/${name}?host=${encodeURIComponent(dir)}`
  return {
    socketDir: dir,
    url,
    async createDatabase() {
      const name = `fm_${process.pid}_${++counter}`
      const admin = new pg.Client({ connectionString: url('postgres') })
      await admin.connect()
      try {
        await admin.query(`CREATE DATABASE ${name} TEMPLATE template0`)
      } finally {
        await admin.end()
      }
      return url(name)
    },
    async restart(whileDown) {
      await shutdown()
      await whileDown?.()
      server = spawnServer()
      await ready(server)
    },
    async stop() {
      await shutdown()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** Resolves once the server logs that it accepts connections; rejects if it exits first. */
function ready(server: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = ''
    const onData = (chunk: Buffer) => {
      log += chunk.toString('utf8')
      if (log.includes('database system is ready to accept connections')) {
        server.stderr?.off('data', onData)
        server.stderr?.resume() // keep draining, or a full pipe would block the server
        server.off('exit', onExit)
        resolve()
      }
    }
    const onExit = (code: number | null) =>
      reject(new Error(`postgres exited (${code}) before it was ready:\n${log}`))
    server.stderr?.on('data', onData)
    server.once('exit', onExit)
    server.once('error', reject)
  })
}
