/**
 * One child process of `npm run bench -- fleet`: runs a share of the bench
 * agents (startBenchAgents in fleet.ts) or, alone in its process, the pinger,
 * and answers the parent's commands (fleet-shards.ts) over the IPC channel.
 * Times are absolute (performance.timeOrigin + now), so the parent can compare
 * them with its own across processes of one machine.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAdminHome } from '../admin/home.ts'
import { DOMAINS } from '../keys/index.ts'
import { createHost, type FleetHost } from '../net/index.ts'
import { sealEnvelope, statusReportSchema } from '../protocol/index.ts'
import { sampleStatus } from '../testkit/fixtures.ts'
import { FleetDirectory } from '../testkit/fleetmesh.ts'
import { type BenchAgent, startBenchAgents } from './fleet.ts'
import type { ShardCommand, ShardReply } from './fleet-shards.ts'

const agents: BenchAgent[] = []
const closes = { agent: 0, coordinator: 0, examples: [] as string[] }
let counting = false
let pinger: { host: FleetHost; rtts: number[]; stop: AbortController } | undefined
let coordinatorPeer = ''

const now = () => performance.timeOrigin + performance.now()
const reply = (m: ShardReply): void => {
  process.send?.(m)
}

/** Counts closes of connections to the coordinator, by which end closed them. */
function watch(host: FleetHost): void {
  const attach = (conn: Connection) => {
    if (conn.remotePeer.toString() !== coordinatorPeer) return
    conn.addEventListener('close', (evt) => {
      if (!counting) return
      const local = (evt as Event & { local?: boolean; error?: Error }).local === true
      if (local) closes.agent++
      else closes.coordinator++
      const error = (evt as Event & { error?: Error }).error
      if (closes.examples.length < 5)
        closes.examples.push(`${local ? 'agent' : 'coordinator/network'}: ${error?.message ?? 'closed'}`)
    })
  }
  for (const conn of host.getConnections()) attach(conn)
  host.addEventListener('connection:open', (e) => attach(e.detail))
}

async function handle(m: ShardCommand): Promise<void> {
  switch (m.op) {
    case 'start': {
      coordinatorPeer = m.coordinatorPeer
      const fleet = new FleetDirectory(m.dir)
      const home = await loadAdminHome(fleet.home)
      await startBenchAgents(fleet, home, m.count, m.coordAddr, agents, m.prefix, async (host) => watch(host))
      return reply({ op: 'started' })
    }
    case 'arm': {
      const at: number[] = []
      for (const a of agents)
        a.onVerified = (id) => {
          if (id !== m.manifestId) return
          at.push(now())
          if (at.length === agents.length) reply({ op: 'verified', at })
        }
      return reply({ op: 'armed' })
    }
    case 'queue': {
      for (const a of agents)
        for (let seq = m.firstSeq; seq < m.firstSeq + m.perAgent; seq++) {
          const report = sampleStatus({ machine: a.name, seq, state: 'idle', facts: { bench: 'yes' } })
          a.queue.push({ seq, envelope: sealEnvelope(statusReportSchema, DOMAINS.status, report, a.key) })
        }
      return reply({ op: 'queued' })
    }
    case 'flush': {
      let left = agents.length
      const last = m.firstSeq + m.perAgent - 1
      for (const a of agents)
        a.onAck = (seq) => {
          if (seq < last) return
          a.onAck = undefined
          if (--left === 0) reply({ op: 'acked', at: now() })
        }
      for (const a of agents) a.link.flush()
      return
    }
    case 'count':
      counting = m.on
      if (m.on) Object.assign(closes, { agent: 0, coordinator: 0, examples: [] })
      return reply({ op: 'counts', ...closes })
    case 'ping-start': {
      const host = await createHost({
        role: 'admin',
        privateKey: await generateKeyPair('Ed25519'),
        listen: [],
      })
      const stop = new AbortController()
      pinger = { host, rtts: [], stop }
      const target = multiaddr(`${m.coordAddr}/p2p/${m.coordinatorPeer}`)
      await host.dial(target)
      const peer = peerIdFromString(m.coordinatorPeer)
      void (async () => {
        while (!stop.signal.aborted) {
          const t = now()
          const rtt = await host.services.ping.ping(peer, { signal: AbortSignal.timeout(30_000) }).then(
            () => now() - t,
            () => Number.POSITIVE_INFINITY, // a ping that failed counts as the slowest
          )
          pinger?.rtts.push(rtt)
          await new Promise((r) => setTimeout(r, m.intervalMs))
        }
      })()
      return reply({ op: 'pinging' })
    }
    case 'ping-stop': {
      pinger?.stop.abort()
      return reply({ op: 'pings', rtts: pinger?.rtts.splice(0) ?? [] })
    }
    case 'stop':
      await Promise.all(
        agents.map(async (a) => {
          await a.link.stop()
          await a.host.stop()
        }),
      )
      await pinger?.host.stop()
      reply({ op: 'stopped' })
      process.disconnect?.()
  }
}

// The bench went away (Ctrl-C, a crash): its agents go with it.
process.on('disconnect', () => process.exit(0))
process.on('message', (m: ShardCommand) => {
  handle(m).catch((err: unknown) => reply({ op: 'error', message: String((err as Error)?.stack ?? err) }))
})
