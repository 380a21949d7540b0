/**
 * The coordinator side of `bench/flood.ts` and `bench/fuzz.ts` (started by
 * coordinator-child.ts): a real coordinator in a child process run with
 * --expose-gc, which answers the parent's IPC questions with a forced-GC
 * snapshot of its memory and of what it holds per peer, or with its framed-stream
 * error counters.
 */
import { startCoordinator } from '../coordinator/daemon.ts'

const [stateDir, listen] = process.argv.slice(2)
if (stateDir === undefined || listen === undefined)
  throw new Error('usage: flood-target.ts <state dir> <listen multiaddr>')
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('run with --expose-gc')

const running = await startCoordinator({ stateDir, listen: [listen] })

async function snapshot() {
  for (let i = 0; i < 3; i++) gc?.()
  const { host } = running
  const mem = process.memoryUsage()
  const peers = await host.peerStore.all()
  return {
    rssMB: Math.round(mem.rss / 2 ** 20),
    heapUsedMB: Math.round(mem.heapUsed / 2 ** 20),
    externalMB: Math.round(mem.external / 2 ** 20),
    arrayBuffersMB: Math.round(mem.arrayBuffers / 2 ** 20),
    connections: host.getConnections().length,
    streams: host.getConnections().reduce((n, c) => n + c.streams.length, 0),
    peerStore: peers.length,
    dhtRoutingTable: (host.services.dht as unknown as { routingTable?: { size: number } }).routingTable?.size,
  }
}

process.on('message', (msg: string) => {
  if (msg === 'snapshot') void snapshot().then((s) => process.send?.({ snapshot: s }))
  if (msg === 'frameErrors') process.send?.({ frameErrors: running.counters.snapshot() })
  if (msg === 'stop') void running.stop().then(() => process.exit(0))
})
process.send?.({ ready: running.host.peerId.toString() })
