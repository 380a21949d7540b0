// Public rendezvous server, standing in for a relay: pairs the two clients that
// register the same session and tells each the other's observed public
// endpoint. Both answers are written in the same tick, which is the "go" signal
// for a simultaneous open. Used by test/natlab/holepunch.test.ts.
//
//   client -> {"type":"register","session":"s1","name":"a"}\n
//   server -> {"type":"peer","session":"s1","name":"b","address":"203.0.113.11","port":40001}\n
//   stdout:  {"event":"listening","port":7100}, {"event":"paired","session":"s1",...}

import net from 'node:net'
import { parseArgs } from 'node:util'
import { emit, plainAddress, readCommands } from './io.ts'

const { values } = parseArgs({ options: { port: { type: 'string', default: '7100' } } })

interface Waiting {
  name: string
  address: string
  port: number
  socket: net.Socket
}

const waiting = new Map<string, Waiting>()

function onRegister(socket: net.Socket, session: string, name: string): void {
  const me: Waiting = {
    name,
    address: plainAddress(socket.remoteAddress),
    port: socket.remotePort ?? 0,
    socket,
  }
  const other = waiting.get(session)
  if (other === undefined) {
    waiting.set(session, me)
    socket.once('close', () => {
      if (waiting.get(session) === me) waiting.delete(session)
    })
    return
  }
  waiting.delete(session)
  const tell = (to: Waiting, about: Waiting): void => {
    to.socket.write(
      `${JSON.stringify({ type: 'peer', session, name: about.name, address: about.address, port: about.port })}\n`,
    )
  }
  tell(other, me)
  tell(me, other)
  emit({
    event: 'paired',
    session,
    a: { name: other.name, address: other.address, port: other.port },
    b: { name: me.name, address: me.address, port: me.port },
  })
}

const server = net.createServer((socket) => {
  socket.setEncoding('utf8')
  socket.on('error', () => {})
  let buffered = ''
  socket.on('data', (chunk: string) => {
    buffered += chunk
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      try {
        const msg: unknown = JSON.parse(line)
        if (
          typeof msg === 'object' &&
          msg !== null &&
          'type' in msg &&
          msg.type === 'register' &&
          'session' in msg &&
          typeof msg.session === 'string' &&
          'name' in msg &&
          typeof msg.name === 'string'
        ) {
          onRegister(socket, msg.session, msg.name)
          continue
        }
      } catch {
        // fall through
      }
      socket.destroy()
    }
  })
})

server.on('error', (err) => {
  emit({ event: 'error', message: err.message })
  process.exit(1)
})
server.listen(Number(values.port), '0.0.0.0', () => {
  const info = server.address()
  emit({ event: 'listening', port: typeof info === 'object' && info !== null ? info.port : 0 })
})

readCommands(() => {})
