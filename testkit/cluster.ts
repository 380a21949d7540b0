/**
 * A fleet served by two coordinator processes sharing one PostgreSQL database
 * (a private cluster, testkit/postgres.ts), on loopback. Coordinator `a` is the
 * one `init` made; `b` is added with `fleetmesh coordinators add` (its own
 * identity, the root-signed list naming both), and gets a copy of the admin
 * home whose fleet file names `b` first, so that
 * tokens made through it send agents to `b` and admin commands go to `b`.
 * Both share one blob directory, as coordinators of one fleet must.
 */
import { cp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { coordinatorArgs } from './fleetmesh.ts'
import { freePort, Proc, runCli, TestFleet } from './harness.ts'
import { type PgCluster, startPostgres } from './postgres.ts'

export type CoordinatorName = 'a' | 'b'

export interface ClusterCoordinator {
  name: CoordinatorName
  state: string
  home: string
  port: number
  proc: Proc | undefined
}

export class ClusterFleet {
  readonly fleet: TestFleet
  readonly pg: PgCluster
  readonly url: string
  readonly coordinators: Record<CoordinatorName, ClusterCoordinator>
  readonly blobs: string

  private constructor(fleet: TestFleet, pg: PgCluster, url: string, b: ClusterCoordinator) {
    this.fleet = fleet
    this.pg = pg
    this.url = url
    this.blobs = join(fleet.dir, 'shared-blobs')
    this.coordinators = {
      a: { name: 'a', state: fleet.coordState, home: fleet.home, port: fleet.port, proc: undefined },
      b,
    }
  }

  static async create(): Promise<ClusterFleet> {
    const pg = await startPostgres()
    try {
      const url = await pg.createDatabase()
      const fleet = await TestFleet.create()
      const state = join(fleet.dir, 'coordinator-b')
      const home = join(fleet.dir, 'admin-b')
      const port = await freePort()
      const addr = `/ip4/127.0.0.1/tcp/${port}`
      // as an operator adds one: a new identity, and the root-signed list naming both
      const added = await fleet.cli(['coordinators', 'add', '--state', state, '--addr', addr, '--json'])
      if (added.code !== 0) throw new Error(`coordinators add exited ${added.code}: ${added.stderr}`)
      const list = JSON.parse(added.stdout) as { coordinators: { peerId: string; addrs: string[] }[] }
      await cp(fleet.home, home, { recursive: true })
      const fleetFile = JSON.parse(await readFile(join(home, 'fleet.json'), 'utf8'))
      fleetFile.coordinator = list.coordinators.at(-1)
      await writeFile(join(home, 'fleet.json'), JSON.stringify(fleetFile))
      return new ClusterFleet(fleet, pg, url, { name: 'b', state, home, port, proc: undefined })
    } catch (err) {
      await pg.stop()
      throw err
    }
  }

  /** Coordinator `name`'s peer id, as the fleet file of its admin home names it. */
  async peerId(name: CoordinatorName): Promise<string> {
    const fleetFile = JSON.parse(await readFile(join(this.coordinators[name].home, 'fleet.json'), 'utf8'))
    return (fleetFile as { coordinator: { peerId: string } }).coordinator.peerId
  }

  /** Starts coordinator `name` on the shared database; resolves once it is ready. */
  async start(name: CoordinatorName, blobs = this.blobs): Promise<Proc> {
    const proc = this.spawn(name, blobs)
    await proc.waitFor((e) => e.event === 'ready', 30_000, `coordinator ${name} ready`)
    return proc
  }

  /** Starts coordinator `name` on the shared database without waiting for it (`blobs`: a directory not shared). */
  spawn(name: CoordinatorName, blobs = this.blobs): Proc {
    const c = this.coordinators[name]
    const extra = ['--store', this.url, '--blobs', blobs]
    const proc = new Proc(
      `coordinator ${name}`,
      coordinatorArgs(c.state, `/ip4/127.0.0.1/tcp/${c.port}`, extra),
    )
    this.fleet.procs.push(proc)
    c.proc = proc
    return proc
  }

  /** Runs an admin command against coordinator `name`; any exit code resolves. */
  cli(name: CoordinatorName, args: string[], timeoutMs?: number) {
    return runCli(['--home', this.coordinators[name].home, ...args], {}, timeoutMs)
  }

  /** A token made through coordinator `name`: the agent enrolls with, and connects to, that coordinator. */
  async token(name: CoordinatorName, machine: string, tags: string[] = []): Promise<string> {
    const r = await this.cli(name, ['enroll', machine, ...tags.flatMap((t) => ['--tag', t]), '--json'])
    if (r.code !== 0) throw new Error(`enroll ${machine} through ${name} exited ${r.code}: ${r.stderr}`)
    return (JSON.parse(r.stdout) as { token: string }).token
  }

  /** Enrolls and starts an agent through coordinator `name`; resolves once its control link is up. */
  async enrollAgent(
    name: CoordinatorName,
    machine: string,
    tags: string[] = [],
    env: NodeJS.ProcessEnv = {},
  ): Promise<Proc> {
    const agent = this.fleet.startAgent(machine, ['--token', await this.token(name, machine, tags)], env)
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${machine} connected`)
    return agent
  }

  async stop(): Promise<void> {
    await this.fleet.stop()
    await this.pg.stop()
  }
}
