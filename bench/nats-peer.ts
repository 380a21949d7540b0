/**
 * The NATS peer of the fleet benchmark: the same fan-out and ingest work on the
 * stack a NATS-based fleet tool runs on, measured in the same run as fleetmesh's.
 *
 * Debian's nats-server runs as its own process, the coordinator hop as another
 * (bench/nats-coordinator-child.ts: admission, durable commit in the same SQLite
 * store, publish; reports through the same StatusIngest), and N subscribers, one
 * NATS connection each, spread over child processes as fleetmesh's bench agents
 * are (nats-subscriber-child.ts), each verifying every manifest end to end with
 * the agent's own verifier.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type NatsConnection } from 'nats'
import type { AdminHome } from '../admin/home.ts'
import { buildManifest, type Manifest, sealManifest } from '../protocol/index.ts'
import { freePort } from '../testkit/harness.ts'
import { AgentShards, type NatsOptions, Shard } from './fleet-shards.ts'
import { percentile } from './measure.ts'

export const NATS_SERVER = '/usr/sbin/nats-server'

export interface NatsFigures {
  fanoutP50: number
  fanoutP99: number
  fanoutAll: number
  ingestPerSecond: number
}

export interface NatsBenchInput {
  home: AdminHome
  /**
   * Every link under TLS (a self-signed ECDSA certificate the clients trust), as
   * fleetmesh encrypts every link with Noise; without it the NATS peer sends plaintext.
   */
  tls: boolean
  agents: number
  /** Processes the subscribers are spread over (as fleetmesh's agents are) */
  processes: number
  /** The admin home's directory, for the subscribers' verifier (the fleet root and id) */
  homeDir: string
  rounds: number
  reportsPerAgent: number
  /** The archive the manifests name (not fetched: the subscribers only verify) */
  blob: { sha256: string; size: number }
}

/** The fan-out's manifest of one round, for every machine tagged "bench" (both fan-out benchmarks). */
export function benchManifest(
  home: AdminHome,
  sequence: number,
  round: number,
  blob: { sha256: string; size: number },
): { manifest: Manifest; envelope: Uint8Array } {
  const manifest = buildManifest({
    fleetId: home.fleet.fleetId,
    sequence,
    generation: `bench-${round}`,
    targets: { machines: [], tags: ['bench'] },
    payload: { kind: 'archive', sha256: blob.sha256, size: blob.size, sources: [{ kind: 'coordinator' }] },
    confirmTimeoutMs: 60_000,
    clockSkewMs: 1000,
    validForMs: 3_600_000,
  })
  return { manifest, envelope: sealManifest(manifest, home.key, home.chain) }
}

/** Starts a process and resolves once a line of its output matches `ready`. */
function started(child: ChildProcess, ready: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = ''
    const look = (chunk: Buffer) => {
      seen += chunk.toString()
      if (ready.test(seen)) resolve()
    }
    child.stdout?.on('data', look)
    child.stderr?.on('data', look)
    child.once('exit', (code) =>
      reject(new Error(`${what} exited with ${code} before it was ready:\n${seen}`)),
    )
  })
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

export async function benchNatsPeer(input: NatsBenchInput): Promise<NatsFigures> {
  const { home, rounds, reportsPerAgent } = input
  const dir = await mkdtemp(join(tmpdir(), 'fm-nats-'))
  const port = await freePort()
  const names = Array.from({ length: input.agents }, (_, i) => `bench-${String(i).padStart(4, '0')}`)
  const n = Math.max(1, Math.min(input.processes, names.length))
  const counts = Array.from(
    { length: n },
    (_, i) => Math.floor(names.length / n) + (i < names.length % n ? 1 : 0),
  )
  const shards = counts.map(() => new Shard(new URL('./nats-subscriber-child.ts', import.meta.url)))
  const subscribers = AgentShards.around(shards, counts)
  let server: ChildProcess | undefined
  let coordinator: ChildProcess | undefined
  let admin: NatsConnection | undefined
  try {
    // each process makes its subscribers' keys; the coordinator hop learns them from fleet.json
    const firsts = counts.map((_, i) => counts.slice(0, i).reduce((a, b) => a + b, 0))
    const keys = await Promise.all(
      shards.map((s, i) => {
        const mine = names.slice(firsts[i], (firsts[i] as number) + (counts[i] as number))
        return s.ask({ op: 'nats-keys', names: mine }, 'keys')
      }),
    )
    const machines = keys.flatMap((k) => k.machines)
    const fleetId = home.fleet.fleetId
    await writeFile(
      join(dir, 'fleet.json'),
      JSON.stringify({ fleetId, fleetRoot: home.fleetRoot.toString(), machines }),
    )
    const tlsArgs = input.tls ? await selfSignedCertificate(dir) : []
    const options: NatsOptions = {
      servers: `${input.tls ? 'tls' : 'nats'}://127.0.0.1:${port}`,
      ...(input.tls ? { tls: { caFile: join(dir, 'cert.pem') } } : {}),
    }
    await writeFile(join(dir, 'connect.json'), JSON.stringify(options))
    server = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port), ...tlsArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    await started(server, /Server is ready/, 'nats-server')
    coordinator = spawn(process.execPath, [join(import.meta.dirname, 'nats-coordinator-child.ts'), dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    await started(coordinator, /^ready$/m, 'the NATS coordinator hop')
    for (const s of shards) await s.ask({ op: 'nats-connect', options, homeDir: input.homeDir }, 'started')
    const client = await connect(options)
    admin = client

    // ---- fan-out: submit → admitted, committed, published → verified by every subscriber
    const { samples, maxima } = await subscribers.fanOut(
      rounds,
      async (round) => benchManifest(home, round + 1, round, input.blob),
      (envelope) => client.request('fm.submit', envelope, { timeout: 60_000 }),
    )
    samples.sort((a, b) => a - b)
    maxima.sort((a, b) => a - b)

    // ---- ingest: every subscriber sends its reports at once; each reply means durably stored
    const seconds = await subscribers.burst(reportsPerAgent)
    const ingestPerSecond = (names.length * reportsPerAgent) / seconds
    return {
      fanoutP50: percentile(samples, 50),
      fanoutP99: percentile(samples, 99),
      fanoutAll: percentile(maxima, 50),
      ingestPerSecond,
    }
  } finally {
    await subscribers.stop()
    await admin?.close()
    await stop(coordinator)
    await stop(server)
    await rm(dir, { recursive: true, force: true })
  }
}

/** A certificate for 127.0.0.1 made with openssl; the nats-server arguments that serve it. */
async function selfSignedCertificate(dir: string): Promise<string[]> {
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  const openssl = spawn(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1'].concat([
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      key,
      '-out',
      cert,
    ]),
    { stdio: 'ignore' },
  )
  const code = await new Promise((resolve) => openssl.once('exit', resolve))
  if (code !== 0) throw new Error(`openssl could not make the NATS peer's certificate (exit ${code})`)
  return ['--tls', '--tlscert', cert, '--tlskey', key]
}

/** Why the NATS peer cannot run here, or undefined when it can. */
export function natsMissing(): string | undefined {
  return existsSync(NATS_SERVER) ? undefined : `${NATS_SERVER} not found (Debian's nats-server package)`
}
