/**
 * The reference the fleet benchmark names for fan-out and ingest: the coordinator
 * hop of a NATS-based fleet (the stack NITS runs on), doing the same work as
 * fleetmesh's coordinator on each message, in its own process as ours is.
 *
 * - `fm.submit` (request/reply): the admin's sealed manifest is admitted with the
 *   same rules (signature, certificate chain, revocations), committed durably to
 *   the same SQLite store, then published on `fm.manifest` to every subscriber.
 * - `fm.report` (request/reply, one queue group): a signed status report is
 *   opened and checked against its machine's key, stored by the same group-commit
 *   StatusIngest, and acknowledged only once durable.
 *
 * Run by bench/nats-peer.ts: `node bench/nats-coordinator-child.ts <dir>`, with
 * `<dir>/fleet.json` = { fleetId, fleetRoot, machines: [{ name, peerId, publicKey }] }
 * and `<dir>/connect.json` = the NATS connection options;
 * prints "ready" once subscribed.
 */
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type ConnectionOptions, connect } from 'nats'
import { StatusIngest } from '../coordinator/ingest.ts'
import { openSqliteStore } from '../coordinator/sqlite-store.ts'
import { DOMAINS, PublicKey } from '../keys/index.ts'
import { admitManifest, openEnvelope, statusReportSchema } from '../protocol/index.ts'

interface FleetFile {
  fleetId: string
  fleetRoot: string
  machines: { name: string; peerId: string; publicKey: string }[]
}

const [dir] = process.argv.slice(2)
if (dir === undefined) throw new Error('usage: nats-coordinator-child.ts <dir>')
const fleet = JSON.parse(await readFile(join(dir, 'fleet.json'), 'utf8')) as FleetFile
const fleetRoot = PublicKey.parse(fleet.fleetRoot)
const store = await openSqliteStore(join(dir, 'fleet.db'))
await store.initFleet(fleet.fleetId, fleet.fleetRoot)
const keys = new Map<string, PublicKey>()
for (const m of fleet.machines) {
  await store.enrollMachine({
    ...m,
    tags: ['bench'],
    facts: {},
    nonce: randomBytes(16).toString('hex'),
    at: Date.now(),
  })
  keys.set(m.name, PublicKey.parse(m.publicKey))
}
const names = fleet.machines.map((m) => m.name)
const ingest = new StatusIngest(store)
// the same connection options as the subscribers (plain, or TLS trusting the peer's certificate)
const nc = await connect(JSON.parse(await readFile(join(dir, 'connect.json'), 'utf8')) as ConnectionOptions)
const ok = new Uint8Array([1])

nc.subscribe('fm.submit', {
  callback: (err, msg) => {
    if (err !== null) return
    void (async () => {
      const now = Date.now()
      const { manifest: m } = admitManifest(msg.data, {
        fleetRoot,
        fleetId: fleet.fleetId,
        revokedSerials: await store.revokedSerials(),
        revocations: await store.revocationLog.state(),
        now,
      })
      await store.addManifest(
        {
          id: m.id,
          sequence: m.sequence,
          rolloutId: m.rolloutId,
          generation: m.generation,
          targets: m.targets,
          envelope: msg.data,
          submittedBy: 'bench',
          submittedAt: now,
          expiresAt: m.expiresAt,
        },
        names,
      )
      nc.publish('fm.manifest', msg.data)
      msg.respond(ok)
    })()
  },
})

nc.subscribe('fm.report', {
  queue: 'coordinator',
  callback: (err, msg) => {
    if (err !== null) return
    void (async () => {
      const opened = openEnvelope(statusReportSchema, DOMAINS.status, msg.data)
      const key = keys.get(opened.value.machine)
      if (key === undefined || !opened.signer.equals(key)) throw new Error('report signed by a stranger')
      const { machine, seq } = opened.value
      await ingest.record({ machine, seq, report: opened.value, envelope: msg.data, receivedAt: Date.now() })
      msg.respond(ok)
    })()
  },
})
await nc.flush()
process.stdout.write('ready\n')
process.on('SIGTERM', () => {
  void nc.close().then(() => store.close().then(() => process.exit(0)))
})
