// Noise as fleetmesh's hosts run it (net/noise.ts): its frame length reader must
// cut an encrypted byte stream into the same frames as the library's own, however
// the bytes arrive, without throwing while a length prefix is incomplete; and a
// handshake through fleetNoise must leave the connection using it.
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { MultiaddrConnection, PrivateKey, Upgrader } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LengthPrefixedDecoder, multiaddrConnectionPair } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { describe, expect, it } from 'vitest'
import { fleetNoise, noiseFrameLength } from '../../net/noise.ts'

/** Frames with 2-byte big-endian lengths, as Noise writes them. */
function framed(payloads: Uint8Array[]): Uint8Array {
  return Buffer.concat(payloads.flatMap((p) => [Buffer.from([p.byteLength >> 8, p.byteLength & 0xff]), p]))
}

/** The library's own reader: throws while fewer than two bytes are buffered. */
function throwingLength(data: Uint8ArrayList | Uint8Array): number {
  if (data.length < 2) throw new RangeError('Could not decode int16BE')
  return data instanceof Uint8Array ? ((data[0] as number) << 8) + (data[1] as number) : data.getUint16(0)
}

function decodeInChunks(
  bytes: Uint8Array,
  chunk: number,
  lengthDecoder: (d: Uint8ArrayList | Uint8Array) => number,
): Uint8Array[] {
  const decoder = new LengthPrefixedDecoder({ lengthDecoder, encodingLength: () => 2 })
  const out: Uint8Array[] = []
  for (let i = 0; i < bytes.byteLength; i += chunk)
    for (const frame of decoder.decode(bytes.subarray(i, i + chunk)))
      out.push(Uint8Array.from(frame.subarray()))
  return out
}

describe('Noise frames', () => {
  it('reads lengths, and 0 (two bytes wanted) while the prefix is incomplete', () => {
    expect(noiseFrameLength(new Uint8Array([0x12, 0x34, 9]))).toBe(0x1234)
    expect(noiseFrameLength(new Uint8ArrayList(new Uint8Array([0xff]), new Uint8Array([0xfe])))).toBe(0xfffe)
    expect(noiseFrameLength(new Uint8Array([0x12]))).toBe(0)
    expect(noiseFrameLength(new Uint8ArrayList())).toBe(0)
  })

  it("cuts a stream into the library's frames at every chunking, without an exception", () => {
    const payloads = [
      randomBytes(1),
      randomBytes(300),
      new Uint8Array(0),
      randomBytes(65_535),
      randomBytes(2),
    ]
    const bytes = framed(payloads)
    const expected = decodeInChunks(bytes, bytes.byteLength, throwingLength)
    // the empty frame is consumed, not yielded, by both
    expect(expected.map((f) => f.byteLength)).toEqual([1, 300, 65_535, 2])
    let thrown = 0
    const counting = (d: Uint8ArrayList | Uint8Array) => {
      try {
        return noiseFrameLength(d)
      } catch (err) {
        thrown++
        throw err
      }
    }
    for (const chunk of [1, 2, 3, 7, 301, 4096, bytes.byteLength])
      expect(decodeInChunks(bytes, chunk, counting), `chunks of ${chunk}`).toEqual(expected)
    expect(thrown).toBe(0)
  })

  it('a handshake through fleetNoise leaves both ends reading frames with it, and data goes through', async () => {
    const components = (privateKey: PrivateKey) => ({
      privateKey,
      peerId: peerIdFromPrivateKey(privateKey),
      logger: defaultLogger(),
      // only asked for stream muxers, which these secure() calls skip
      upgrader: {} as Upgrader,
    })
    const [ka, kb] = await Promise.all([generateKeyPair('Ed25519'), generateKeyPair('Ed25519')])
    const [a, b] = [fleetNoise()(components(ka)), fleetNoise()(components(kb))]
    const [outbound, inbound] = multiaddrConnectionPair() as [MultiaddrConnection, MultiaddrConnection]
    const options = { skipStreamMuxerNegotiation: true }
    const [sa, sb] = await Promise.all([
      a.secureOutbound(outbound, options),
      b.secureInbound(inbound, options),
    ])
    for (const s of [sa, sb])
      expect((Reflect.get(s.connection, 'decoder') as { lengthDecoder: unknown }).lengthDecoder).toBe(
        noiseFrameLength,
      )
    const got: Uint8Array[] = []
    const all = new Promise<void>((resolve) =>
      sb.connection.addEventListener('message', (e) => {
        got.push(e.data.subarray())
        if (got.reduce((n, g) => n + g.byteLength, 0) === 100_300) resolve()
      }),
    )
    const sent = [randomBytes(300), randomBytes(100_000)]
    for (const m of sent) sa.connection.send(m)
    await all
    expect(Buffer.concat(got)).toEqual(Buffer.concat(sent))
    await Promise.all([sa.connection.close(), sb.connection.close()])
  })
})
