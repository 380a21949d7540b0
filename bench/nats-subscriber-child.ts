/**
 * One child process of the NATS peer (nats-peer.ts): a share of its
 * subscribers, one NATS connection each, spread over processes as fleetmesh's
 * bench agents are (fleet-shards.ts), so both stacks do the same work in the
 * same shape. It answers the same commands as an agent process: keys, connect,
 * arm (verify a manifest with the agent's own verifier), queue and flush
 * (status reports by request/reply, each answered once durably stored).
 */
import { connect, type NatsConnection } from 'nats'
import { loadAdminHome } from '../admin/home.ts'
import { verifyManifest } from '../agent/verify.ts'
import { CertificateMemo, DOMAINS, PrivateKey } from '../keys/index.ts'
import { sealEnvelope, statusReportSchema } from '../protocol/index.ts'
import { sampleStatus } from '../testkit/fixtures.ts'
import type { ShardCommand, ShardReply } from './fleet-shards.ts'

interface Subscriber {
  name: string
  key: PrivateKey
  conn?: NatsConnection
  queue: Uint8Array[]
  /** Its own, as each fleetmesh agent keeps one: the same verify work on both sides. */
  certificates: CertificateMemo
}

let subscribers: Subscriber[] = []
let onVerified: (id: string) => void = () => {}

const now = () => performance.timeOrigin + performance.now()
const reply = (m: ShardReply): void => {
  process.send?.(m)
}

async function handle(m: ShardCommand): Promise<void> {
  switch (m.op) {
    case 'nats-keys':
      subscribers = m.names.map((name) => ({
        name,
        key: PrivateKey.generate(),
        queue: [],
        certificates: new CertificateMemo(),
      }))
      return reply({
        op: 'keys',
        machines: subscribers.map(({ name, key }) => ({
          name,
          peerId: key.toPeerId().toString(),
          publicKey: key.publicKey.toString(),
        })),
      })
    case 'nats-connect': {
      const home = await loadAdminHome(m.homeDir)
      for (let i = 0; i < subscribers.length; i += 50)
        await Promise.all(
          subscribers.slice(i, i + 50).map(async (s) => {
            s.conn = await connect(m.options)
          }),
        )
      for (const s of subscribers)
        s.conn?.subscribe('fm.manifest', {
          callback: (err, msg) => {
            if (err !== null) return
            const v = verifyManifest(msg.data, {
              fleetRoot: home.fleetRoot,
              fleetId: home.fleet.fleetId,
              machine: s.name,
              tags: ['bench'],
              lastSequence: 0,
              certificates: s.certificates,
            })
            onVerified(v.manifest.id)
          },
        })
      await Promise.all(subscribers.map((s) => s.conn?.flush()))
      return reply({ op: 'started' })
    }
    case 'arm': {
      const at: number[] = []
      onVerified = (id) => {
        if (id !== m.manifestId) return
        at.push(now())
        if (at.length === subscribers.length) reply({ op: 'verified', at })
      }
      return reply({ op: 'armed' })
    }
    case 'queue':
      for (const s of subscribers)
        for (let seq = m.firstSeq; seq < m.firstSeq + m.perAgent; seq++) {
          const report = sampleStatus({ machine: s.name, seq, state: 'idle', facts: { bench: 'yes' } })
          s.queue.push(sealEnvelope(statusReportSchema, DOMAINS.status, report, s.key))
        }
      return reply({ op: 'queued' })
    case 'flush':
      await Promise.all(
        subscribers.flatMap((s) =>
          s.queue.splice(0).map((r) => s.conn?.request('fm.report', r, { timeout: 120_000 })),
        ),
      )
      return reply({ op: 'acked', at: now() })
    case 'stop':
      await Promise.all(subscribers.map((s) => s.conn?.close()))
      reply({ op: 'stopped' })
      process.disconnect?.()
      return
    default:
      throw new Error(`a NATS subscriber process does not take "${m.op}"`)
  }
}

// The bench went away (Ctrl-C, a crash): its subscribers go with it.
process.on('disconnect', () => process.exit(0))
process.on('message', (m: ShardCommand) => {
  handle(m).catch((err: unknown) => reply({ op: 'error', message: String((err as Error)?.stack ?? err) }))
})
