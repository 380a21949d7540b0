/**
 * One side of bench/quic-lab.ts, run in a NAT lab namespace, printing JSON lines:
 *   serve <ip>                         a coordinator-role host on <ip> TCP and QUIC 4001; prints {event: 'ready', tcp, quic}
 *   dial <tcp addr> <quic addr> <n>    set-up times over each (bench/quic.ts); prints {event: 'times', times}
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost, untilSignal } from '../net/index.ts'
import { setUpTimes } from './quic.ts'

const [mode, ...rest] = process.argv.slice(2)
const say = (event: string, fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ event, ...fields }))

if (mode === 'serve') {
  const host = await createHost({
    role: 'coordinator',
    privateKey: await generateKeyPair('Ed25519'),
    listen: [`/ip4/${rest[0]}/tcp/4001`],
  })
  const addrs = host.getMultiaddrs().map(String)
  say('ready', {
    tcp: addrs.find((a) => a.includes('/tcp/')),
    quic: addrs.find((a) => a.includes('/quic-v1')),
  })
  await untilSignal()
  await host.stop()
} else if (mode === 'dial') {
  const [tcp = '', quic = '', n = '20'] = rest
  const times = await setUpTimes({ tcp: multiaddr(tcp), quic: multiaddr(quic) }, Number(n), 0)
  say('times', { times })
} else {
  console.error('usage: quic-lab-child.ts serve <ip> | dial <tcp addr> <quic addr> <dials>')
  process.exit(2)
}
