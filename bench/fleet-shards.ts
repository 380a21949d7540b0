/**
 * The fleet bench's agents spread over several child processes
 * (fleet-shard-child.ts), so that a stall on the agents' side (hundreds of
 * libp2p hosts in one event loop) cannot be mistaken for one on the
 * coordinator's; plus a pinger alone in its own process. The parent sends
 * commands and takes replies over the IPC channel; times are absolute
 * (performance.timeOrigin + now) on this one machine.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { setPriority } from 'node:os'
import type { Manifest } from '../protocol/index.ts'
import type { FleetDirectory } from '../testkit/fleetmesh.ts'
import { cpuSeconds } from './measure.ts'

export type ShardCommand =
  | { op: 'start'; dir: string; count: number; coordAddr: string; coordinatorPeer: string; prefix: string }
  | { op: 'arm'; manifestId: string }
  | { op: 'queue' | 'flush'; firstSeq: number; perAgent: number }
  | { op: 'count'; on: boolean }
  | { op: 'ping-start'; coordAddr: string; coordinatorPeer: string; intervalMs: number }
  | { op: 'ping-stop' | 'stop' }
  // the NATS peer's subscribers (nats-subscriber-child.ts): keys first, then connect; the rest as above
  | { op: 'nats-keys'; names: string[] }
  | { op: 'nats-connect'; options: NatsOptions; homeDir: string }
  // the cluster bench's failover agents (failover-child.ts): enroll through A, then wait to be on `movedTo`
  | { op: 'failover-start'; dir: string; count: number; prefix: string; movedTo: string; standby: boolean }
  | { op: 'failover-wait'; timeoutMs: number }
  | { op: 'failover-standby'; timeoutMs: number }

export type ShardReply =
  | { op: 'started' | 'armed' | 'queued' | 'pinging' | 'stopped' }
  | { op: 'standing'; held: number }
  | { op: 'verified'; at: number[] }
  | { op: 'acked'; at: number }
  | { op: 'counts'; agent: number; coordinator: number; examples: string[] }
  | { op: 'pings'; rtts: number[] }
  | { op: 'keys'; machines: { name: string; peerId: string; publicKey: string }[] }
  | { op: 'moved'; at: number[]; lost: number[]; failures: [reason: string, count: number][] }
  | { op: 'error'; message: string }

type Reply<O extends ShardReply['op']> = Extract<ShardReply, { op: O }>

/** How a NATS subscriber connects (the `nats` package's options, as the parent wrote them). */
export interface NatsOptions {
  servers: string
  tls?: { caFile: string }
}

const now = () => performance.timeOrigin + performance.now()

/**
 * The nice value of the processes that run the bench's agents (and the NATS
 * peer's subscribers). On a fleet the agents run on machines of their own; here
 * they share two cores with the coordinator under test, and at the same priority
 * their own work (signing, handshakes, verifying) took the CPU from it in the
 * middle of what is being timed. At the lowest priority they run on what the
 * coordinator (its report verifiers at nice 10 included) leaves. The pinger,
 * which times the coordinator's answers, is not niced.
 */
export const AGENT_NICE = 19

export class Shard {
  readonly child: ChildProcess
  readonly #waiting = new Map<string, (m: ShardReply) => void>()
  #failed: Error | undefined

  constructor(module = new URL('./fleet-shard-child.ts', import.meta.url), nice = AGENT_NICE) {
    this.child = fork(module, [], {
      execArgv: ['--disable-warning=ExperimentalWarning'],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    if (nice !== 0 && this.child.pid !== undefined) setPriority(this.child.pid, nice)
    this.child.on('message', (m: ShardReply) => {
      if (m.op === 'error') this.#fail(new Error(`bench agent process: ${m.message}`))
      else this.#waiting.get(m.op)?.(m)
    })
    this.child.on('exit', (code) => this.#fail(new Error(`bench agent process exited with code ${code}`)))
  }

  #fail(err: Error): void {
    this.#failed ??= err
    for (const w of this.#waiting.values()) w({ op: 'error', message: err.message })
  }

  /** The next reply `op` (armed before the command goes out, so a quick reply is not missed). */
  next<O extends ShardReply['op']>(op: O): Promise<Reply<O>> {
    if (this.#failed) return Promise.reject(this.#failed)
    return new Promise((resolve, reject) =>
      this.#waiting.set(op, (m) => {
        this.#waiting.delete(op)
        if (m.op === 'error') reject(new Error(m.message))
        else resolve(m as Reply<O>)
      }),
    )
  }

  ask<O extends ShardReply['op']>(command: ShardCommand, op: O): Promise<Reply<O>> {
    const reply = this.next(op)
    this.child.send(command)
    return reply
  }
}

export class AgentShards {
  readonly #shards: Shard[]
  readonly #counts: number[]
  #pinger: Shard | undefined
  #seq = 1_000

  private constructor(shards: Shard[], counts: number[]) {
    this.#shards = shards
    this.#counts = counts
  }

  /** Starts `total` agents spread evenly over `processes` children, all connected when it resolves. */
  static async start(
    fleet: FleetDirectory,
    total: number,
    processes: number,
    coordAddr: string,
    coordinatorPeer: string,
    /** Starts the agents' names: groups started for one fleet need prefixes of their own. */
    prefix = 'b',
  ): Promise<AgentShards> {
    const n = Math.max(1, Math.min(processes, total))
    const counts = Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0))
    const shards = counts.map(() => new Shard())
    const self = new AgentShards(shards, counts)
    try {
      // One process enrolling at a time: all at once, a loaded machine timed enrollments out at 1,000 agents.
      for (const [i, s] of shards.entries()) {
        const count = counts[i] as number
        await s.ask(
          { op: 'start', dir: fleet.dir, count, coordAddr, coordinatorPeer, prefix: `${prefix}${i}` },
          'started',
        )
      }
    } catch (err) {
      await self.stop()
      throw err
    }
    return self
  }

  /** Several groups (e.g. one per coordinator) driven as one: fan-out and bursts span them all. */
  static combine(groups: readonly AgentShards[]): AgentShards {
    return new AgentShards(
      groups.flatMap((g) => g.#shards),
      groups.flatMap((g) => g.#counts),
    )
  }

  get processes(): number {
    return this.#shards.length
  }

  /** CPU time the agents' processes have used (all their threads), in seconds; the pinger's is not counted. */
  async cpuSeconds(): Promise<number> {
    const each = await Promise.all(this.#shards.map((s) => cpuSeconds(s.child.pid as number)))
    return each.reduce((a, b) => a + b, 0)
  }

  /** Shards started elsewhere (the NATS peer's subscribers), with how many each runs. */
  static around(shards: Shard[], counts: number[]): AgentShards {
    return new AgentShards(shards, counts)
  }

  /** `rounds` manifests, one at a time: per agent submit → verified, and per round the slowest, in ms. */
  async fanOut(
    rounds: number,
    manifestFor: (round: number) => Promise<{ manifest: Manifest; envelope: Uint8Array }>,
    submit: (envelope: Uint8Array) => Promise<unknown>,
  ): Promise<{ samples: number[]; maxima: number[] }> {
    const samples: number[] = []
    const maxima: number[] = []
    for (let round = 0; round < rounds; round++) {
      const { manifest, envelope } = await manifestFor(round)
      const verified = this.#shards.map((s) => s.next('verified'))
      await Promise.all(this.#shards.map((s) => s.ask({ op: 'arm', manifestId: manifest.id }, 'armed')))
      const t0 = now()
      await submit(envelope)
      const times = (await Promise.all(verified)).flatMap((v) => v.at.map((at) => at - t0))
      samples.push(...times)
      maxima.push(Math.max(...times))
    }
    return { samples, maxima }
  }

  /** Every agent sends `perAgent` signed reports at once; resolves with the seconds until the last is acked. */
  async burst(perAgent: number): Promise<number> {
    const firstSeq = await this.queue(perAgent)
    const t1 = now()
    const last = await this.flushed(firstSeq, perAgent)
    return (last - t1) / 1000
  }

  /** Every agent queues `perAgent` signed reports without sending them; resolves with the first one's seq. */
  async queue(perAgent: number): Promise<number> {
    const firstSeq = this.#seq + 1
    this.#seq += perAgent
    await Promise.all(this.#shards.map((s) => s.ask({ op: 'queue', firstSeq, perAgent }, 'queued')))
    return firstSeq
  }

  /**
   * Has every agent send what `queue` put there: now if its link is up, else on its next hello. Resolves
   * with the absolute time (performance.timeOrigin + now) at which the last agent's last report was acked.
   */
  async flushed(firstSeq: number, perAgent: number): Promise<number> {
    const acked = this.#shards.map((s) => s.next('acked'))
    for (const s of this.#shards) s.child.send({ op: 'flush', firstSeq, perAgent } satisfies ShardCommand)
    return Math.max(...(await Promise.all(acked)).map((a) => a.at))
  }

  get agents(): number {
    return this.#counts.reduce((a, b) => a + b, 0)
  }

  /** Starts (on) or ends (off) counting closed connections to the coordinator; the sums of all agents. */
  async count(on: boolean): Promise<{ agent: number; coordinator: number; examples: string[] }> {
    const all = await Promise.all(this.#shards.map((s) => s.ask({ op: 'count', on }, 'counts')))
    return {
      agent: all.reduce((n, c) => n + c.agent, 0),
      coordinator: all.reduce((n, c) => n + c.coordinator, 0),
      examples: all.flatMap((c) => c.examples).slice(0, 5),
    }
  }

  /** A libp2p ping to the coordinator every `intervalMs`, from a process of its own, until `stopPinger`. */
  async startPinger(coordAddr: string, coordinatorPeer: string, intervalMs: number): Promise<void> {
    this.#pinger = new Shard(undefined, 0)
    await this.#pinger.ask({ op: 'ping-start', coordAddr, coordinatorPeer, intervalMs }, 'pinging')
  }

  /** The round trips the pinger saw, in ms (a failed ping is Infinity). */
  async stopPinger(): Promise<number[]> {
    return (await this.#pinger?.ask({ op: 'ping-stop' }, 'pings'))?.rtts ?? []
  }

  async stop(): Promise<void> {
    const all = [...this.#shards, ...(this.#pinger ? [this.#pinger] : [])]
    await Promise.all(
      all.map(async (s) => {
        if (s.child.exitCode !== null || !s.child.connected) return
        await s.ask({ op: 'stop' }, 'stopped').catch(() => {})
        s.child.kill()
      }),
    )
  }
}
