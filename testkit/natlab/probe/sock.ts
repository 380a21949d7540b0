// A socket puppet driven from stdin, so a test can open, use and close TCP
// sockets inside a lab namespace step by step and see every outcome. Driven
// through sock-client.ts by test/natlab/lab.test.ts and holepunch.test.ts.
//
// Commands (JSON lines on stdin), each naming a socket `id`:
//   {"cmd":"connect","id":"a","host":"203.0.113.100","port":7000,"localPort":40001,"timeoutMs":1000}
//   {"cmd":"send","id":"a","line":"ping"}       write one line
//   {"cmd":"end","id":"a"}                       graceful close (FIN)
//   {"cmd":"destroy","id":"a"}                   drop it
//   {"cmd":"listen","id":"l","port":5000,"reusePort":false}  accept connections (each echoes)
// Events (stdout): ready, connected, data {line}, error {code, phase}, closed,
// listening, accepted.

import net from 'node:net'
import { emit, errorCode, optNum, plainAddress, readCommands, str } from './io.ts'

const sockets = new Map<string, net.Socket>()
const servers = new Map<string, net.Server>()

function track(id: string, socket: net.Socket): void {
  sockets.set(id, socket)
  let buffered = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => {
    buffered += chunk
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      emit({ event: 'data', id, line })
    }
  })
  socket.on('close', (hadError) => {
    sockets.delete(id)
    emit({ event: 'closed', id, hadError })
  })
}

function connect(command: Record<string, unknown>): void {
  const id = str(command, 'id')
  const timeoutMs = optNum(command, 'timeoutMs') ?? 5_000
  const localPort = optNum(command, 'localPort')
  const socket = net.connect({ host: str(command, 'host'), port: optNum(command, 'port') ?? 0, localPort })
  let settled = false
  const timer = setTimeout(() => {
    settled = true
    socket.destroy()
    emit({ event: 'error', id, phase: 'connect', code: 'ETIMEDOUT', message: `no answer in ${timeoutMs} ms` })
  }, timeoutMs)
  socket.once('connect', () => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    track(id, socket)
    emit({
      event: 'connected',
      id,
      localAddress: plainAddress(socket.localAddress),
      localPort: socket.localPort,
      remoteAddress: plainAddress(socket.remoteAddress),
      remotePort: socket.remotePort,
    })
  })
  socket.on('error', (err) => {
    const phase = settled ? 'io' : 'connect'
    if (!settled) {
      settled = true
      clearTimeout(timer)
    }
    emit({ event: 'error', id, phase, code: errorCode(err), message: err.message })
  })
}

function listen(command: Record<string, unknown>): void {
  const id = str(command, 'id')
  let accepted = 0
  const server = net.createServer((socket) => {
    const sid = `${id}.${accepted++}`
    emit({
      event: 'accepted',
      id,
      socket: sid,
      address: plainAddress(socket.remoteAddress),
      port: socket.remotePort,
    })
    socket.on('error', () => {})
    socket.pipe(socket)
  })
  server.once('error', (err) =>
    emit({ event: 'error', id, phase: 'listen', code: errorCode(err), message: err.message }),
  )
  const reusePort = command.reusePort === true
  server.listen({ port: optNum(command, 'port') ?? 0, host: '0.0.0.0', reusePort }, () => {
    servers.set(id, server)
    const info = server.address()
    emit({ event: 'listening', id, port: typeof info === 'object' && info !== null ? info.port : 0 })
  })
}

readCommands((command) => {
  try {
    switch (command.cmd) {
      case 'connect':
        connect(command)
        break
      case 'listen':
        listen(command)
        break
      case 'send':
        sockets.get(str(command, 'id'))?.write(`${str(command, 'line')}\n`)
        break
      case 'end':
        sockets.get(str(command, 'id'))?.end()
        break
      case 'destroy':
        sockets.get(str(command, 'id'))?.destroy()
        servers.get(str(command, 'id'))?.close()
        break
      default:
        emit({ event: 'bad-command', command })
    }
  } catch (err) {
    emit({ event: 'bad-command', command, message: err instanceof Error ? err.message : String(err) })
  }
})

emit({ event: 'ready' })
