/**
 * A connected `net.Socket` as a libp2p MultiaddrConnection, so the node's own
 * upgrader can run multistream-select, Noise and Yamux over a socket libp2p
 * did not dial. Mirrors `@libp2p/tcp`'s socket-to-conn.ts, which that package
 * does not export.
 */

import { once } from 'node:events'
import type { Socket } from 'node:net'
import type { AbortOptions, MultiaddrConnection } from '@libp2p/interface'
import { TimeoutError } from '@libp2p/interface'
import {
  AbstractMultiaddrConnection,
  type AbstractMultiaddrConnectionInit,
  type SendResult,
} from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface SocketConnInit extends Omit<AbstractMultiaddrConnectionInit, 'name'> {
  socket: Socket
}

class SocketMultiaddrConnection extends AbstractMultiaddrConnection {
  readonly #socket: Socket

  constructor(init: SocketConnInit) {
    super(init)
    const socket = init.socket
    this.#socket = socket
    socket.on('data', (buf: Buffer) => this.onData(buf))
    socket.on('error', (err) => this.abort(err))
    // as @libp2p/tcp: without an inactivity timeout a silently dead peer (its
    // NAT rebooted) would hold the connection until TCP keepalive gives up
    socket.setTimeout(init.inactivityTimeout ?? 2 * 60_000)
    socket.once('timeout', () => this.abort(new TimeoutError('punched connection inactive')))
    socket.once('end', () => this.onTransportClosed())
    socket.once('close', (hadError) => {
      if (hadError) this.abort(new Error('TCP transmission error on punched connection'))
      else this.onTransportClosed()
    })
    socket.on('drain', () => this.safeDispatchEvent('drain'))
  }

  sendData(data: Uint8ArrayList): SendResult {
    let sentBytes = 0
    let canSendMore = true
    for (const buf of data) {
      sentBytes += buf.byteLength
      canSendMore = this.#socket.write(buf)
      if (!canSendMore) break
    }
    return { sentBytes, canSendMore }
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    if (this.#socket.destroyed) return
    this.#socket.destroySoon()
    await once(this.#socket, 'close', { signal: options?.signal })
  }

  sendReset(): void {
    // uv_tcp_close_reset cannot follow uv_shutdown (a started end())
    if (this.#socket.writableEnded) this.#socket.destroy()
    else this.#socket.resetAndDestroy()
  }

  sendPause(): void {
    this.#socket.pause()
  }

  sendResume(): void {
    this.#socket.resume()
  }
}

export function socketToMultiaddrConnection(init: SocketConnInit): MultiaddrConnection {
  return new SocketMultiaddrConnection(init)
}
