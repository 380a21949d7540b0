/**
 * QUIC against TCP + Noise + Yamux through the NAT lab (bench:nat): connection
 * set-up (dial → first stream answered) from a host behind an eim router to a
 * public host, with `tc netem` adding 50 ms delay and 2 % loss each way on the
 * router where the kernel has netem, and without it (said so) where not.
 */
import { fileURLToPath } from 'node:url'
import { createLab, LabCommandError } from '../testkit/natlab/lab.ts'
import { printSetUp } from './quic.ts'

const CHILD = fileURLToPath(new URL('./quic-lab-child.ts', import.meta.url))

export async function quicThroughLab(dials: number): Promise<Record<string, number>> {
  const lab = createLab()
  try {
    const server = lab.addPublicHost('coord')
    const router = lab.addRouter('lossy', { behaviour: 'eim' })
    const client = lab.addPrivateHost('dev', router)
    let label = 'Through an eim router with tc netem, 50 ms delay and 2 % loss each way'
    try {
      for (const dev of ['wan', 'lan'])
        lab.exec(router, 'tc', ['qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', '50ms', 'loss', '2%'])
    } catch (err) {
      const why = err instanceof LabCommandError ? err.stderr.trim() : String(err)
      console.log(`QUIC vs TCP with loss and delay: skipped, tc netem is not available here (${why})`)
      label = 'Through an eim router, no added loss or delay (netem unavailable)'
    }
    const serve = lab.spawnNode(server, CHILD, ['serve', server.ip])
    const ready = await serve.waitFor('ready', 30_000)
    const dial = lab.spawnNode(client, CHILD, ['dial', String(ready.tcp), String(ready.quic), String(dials)])
    const done = await dial.waitFor('times', 30_000 + dials * 2 * 3_000)
    const out = printSetUp(label, done.times as { quic: number[]; tcp: number[] })
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [`lab ${k}`, v]))
  } finally {
    lab.destroy()
  }
}
