// Public "what is my address" server: tells each client the source ip:port it
// sees (one JSON line), then echoes whatever the client sends. Started by
// sock-client.ts's startObserver for test/natlab/lab.test.ts and holepunch.test.ts.
//
//   node observer.ts --port 7000
//   stdout: {"event":"listening","port":7000}
//           {"event":"accepted","address":"203.0.113.10","port":40001}
//   to the client: {"type":"observed","address":"203.0.113.10","port":40001}\n, then an echo

import net from 'node:net'
import { parseArgs } from 'node:util'
import { emit, plainAddress, readCommands } from './io.ts'

const { values } = parseArgs({
  options: { port: { type: 'string', default: '7000' }, host: { type: 'string', default: '0.0.0.0' } },
})

const server = net.createServer((socket) => {
  const address = plainAddress(socket.remoteAddress)
  const port = socket.remotePort ?? 0
  emit({ event: 'accepted', address, port })
  socket.on('error', () => {})
  socket.write(`${JSON.stringify({ type: 'observed', address, port })}\n`)
  socket.pipe(socket)
})

server.on('error', (err) => {
  emit({ event: 'error', message: err.message })
  process.exit(1)
})
server.listen(Number(values.port), values.host, () => {
  const info = server.address()
  emit({ event: 'listening', port: typeof info === 'object' && info !== null ? info.port : 0 })
})

readCommands(() => {})
