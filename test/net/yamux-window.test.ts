// Yamux window updates as go-yamux sends them (net/yamux-window.ts): a stream
// receiving many small messages (reports, manifests) answers with a window
// update only once half its window is used, not one per frame, and bulk data
// still flows without waiting.
import { randomBytes } from 'node:crypto'
import { yamux } from '@chainsafe/libp2p-yamux'
import { StreamState } from '@chainsafe/libp2p-yamux/stream'
import type { Stream } from '@libp2p/interface'
import { multiaddrConnectionPair } from '@libp2p/utils'
import { describe, expect, it } from 'vitest'
import { deferYamuxWindowUpdates, windowUpdateCanWait } from '../../net/yamux-window.ts'

const WINDOW_UPDATE = 1 // yamux frame type

/** A connected pair of yamux muxers, one stream from a to b, and b's window update frames counted. */
async function pair() {
  const [ca, cb] = multiaddrConnectionPair()
  const factory = yamux()()
  const [a, b] = [factory.createStreamMuxer(ca), factory.createStreamMuxer(cb)]
  const incoming = new Promise<Stream>((resolve) => b.addEventListener('stream', (e) => resolve(e.detail)))
  const sender = await a.createStream()
  sender.send(new Uint8Array([0])) // opens it at b
  const receiver = await incoming
  const counted = { updates: 0 }
  const inner = receiver as unknown as {
    sendFrame(h: { type: number; flag: number }, body?: unknown): boolean
  }
  const send = inner.sendFrame
  inner.sendFrame = (header, body) => {
    // the one that carries b's ACK (a flag) must go out at once, and is not counted
    if (header.type === WINDOW_UPDATE && header.flag === 0) counted.updates++
    return send(header, body)
  }
  const received = { bytes: 0 }
  receiver.addEventListener('message', (e) => {
    received.bytes += e.data.byteLength
  })
  const until = (bytes: number) =>
    new Promise<void>((resolve) => {
      const check = () => (received.bytes >= bytes ? resolve() : setImmediate(check))
      check()
    })
  return { a, b, sender, receiver, counted, received, until }
}

describe('yamux window updates', () => {
  it('decides as go-yamux: wait below half the window unless a flag is due', () => {
    const w = 256 * 1024
    expect(
      windowUpdateCanWait({ state: StreamState.Established, recvWindow: w, recvWindowCapacity: w - 500 }),
    ).toBe(true)
    expect(
      windowUpdateCanWait({ state: StreamState.Established, recvWindow: w, recvWindowCapacity: w / 2 }),
    ).toBe(false)
    expect(
      windowUpdateCanWait({ state: StreamState.SYNReceived, recvWindow: w, recvWindowCapacity: w }),
    ).toBe(false)
    expect(windowUpdateCanWait({ state: StreamState.Init, recvWindow: w, recvWindowCapacity: w })).toBe(false)
    expect(
      windowUpdateCanWait({ state: StreamState.Paused, recvWindow: w, recvWindowCapacity: w - 500 }),
    ).toBe(false)
  })

  it('answers 200 small messages with no window update, and 4 MiB of bulk without a stall', async () => {
    deferYamuxWindowUpdates()
    const p = await pair()
    const small = randomBytes(500)
    // each its own frame, as reports come: the next goes once the last has arrived
    for (let i = 1; i <= 200; i++) {
      p.sender.send(small)
      await p.until(1 + i * 500)
    }
    expect(p.counted.updates).toBe(0)
    const bulk = randomBytes(4 * 1024 * 1024)
    for (let i = 0; i < bulk.byteLength; i += 64 * 1024)
      if (!p.sender.send(bulk.subarray(i, i + 64 * 1024)))
        await new Promise((resolve) => p.sender.addEventListener('drain', resolve, { once: true }))
    await p.until(1 + 200 * 500 + bulk.byteLength)
    // one per half window at most: 4 MiB over windows of 256 KiB and more
    expect(p.counted.updates).toBeGreaterThan(0)
    expect(p.counted.updates).toBeLessThanOrEqual(32)
    await Promise.all([p.a.close(), p.b.close()])
  })
})
