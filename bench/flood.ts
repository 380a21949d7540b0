/**
 * Floods a real coordinator on loopback from many unauthenticated peers and
 * shows what it still holds afterwards, after forced GCs: memory, connections,
 * streams and per-peer records. Not part of `npm run bench` (it is an attack).
 *
 *   node_modules/.bin/node bench/flood.ts [--peers 400] [--conns 4] [--parallel 20]
 *
 * Each peer (a fresh identity) opens `--conns` connections, on each a control
 * stream (refused: not enrolled) and an admin stream with a garbage request,
 * then leaves. Targets only 127.0.0.1; bounded in count.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../net/index.ts'
import { FramedStream, PROTOCOLS } from '../protocol/index.ts'
import { TestFleet } from '../testkit/harness.ts'
import { CoordinatorChild, type Snapshot } from './coordinator-child.ts'

const arg = (flag: string, fallback: number) => {
  const i = process.argv.indexOf(flag)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}
const PEERS = Math.min(arg('--peers', 400), 5_000)
const CONNS = Math.min(arg('--conns', 4), 50)
const PARALLEL = Math.min(arg('--parallel', 20), 100)

const fleet = await TestFleet.create()
const addr = `/ip4/127.0.0.1/tcp/${fleet.port}`
const coordinator = await CoordinatorChild.start(fleet.coordState, addr)
const { peerId } = coordinator
const snapshot = () => coordinator.snapshot()

async function attacker(): Promise<void> {
  const h = await createHost({ role: 'admin', privateKey: await generateKeyPair('Ed25519'), listen: [] })
  try {
    for (let c = 0; c < CONNS; c++) {
      const conn = await h.dial(multiaddr(`${addr}/p2p/${peerId}`), { force: true }).catch(() => undefined)
      if (conn === undefined) continue
      const control = await conn.newStream(PROTOCOLS.control).catch(() => undefined)
      if (control) await new FramedStream(control).read({ timeoutMs: 5_000 }).catch(() => undefined)
      const admin = await conn.newStream(PROTOCOLS.admin).catch(() => undefined)
      if (admin) {
        const fs = new FramedStream(admin)
        await fs.send(crypto.getRandomValues(new Uint8Array(512))).catch(() => undefined)
        await fs.read({ timeoutMs: 5_000 }).catch(() => undefined)
      }
    }
  } finally {
    await h.stop()
  }
}

const rows: [string, Snapshot][] = [['before', await snapshot()]]
const started = Date.now()
let next = 0
await Promise.all(
  Array.from({ length: PARALLEL }, async () => {
    while (next < PEERS) {
      next++
      await attacker()
    }
  }),
)
const floodSeconds = (Date.now() - started) / 1000
rows.push(['right after', await snapshot()])
await new Promise((r) => setTimeout(r, 15_000))
rows.push(['15 s later', await snapshot()])

console.log(
  `flood: ${PEERS} peers × ${CONNS} connections (${PARALLEL} at a time) in ${floodSeconds.toFixed(1)} s`,
)
const keys = Object.keys(rows[0]![1])
console.log(['', ...keys].join('\t'))
for (const [name, s] of rows) console.log([name, ...keys.map((k) => String(s[k]))].join('\t'))

await coordinator.stop()
await fleet.stop()
