/**
 * A frame that arrived together with the end of the stream, while protocol
 * negotiation (multistream-select) still held it in its own buffer, is read,
 * not lost. libp2p marks such a stream's readable end as ended as soon as the
 * remote's FIN arrives with its own read buffer empty; when negotiation then
 * hands the bytes it read ahead back (`unwrap()` → `unshift`), the stream
 * holds data although `readableEnded` is already true. A coordinator refusing
 * an unenrolled peer (send the reason, close) hit exactly this under load: the
 * peer saw a clean end and no reason.
 */
import { byteStream, streamPair } from '@libp2p/utils'
import { describe, expect, it } from 'vitest'
import { encodeFramePrefix } from '../../protocol/frame-decoder.ts'
import { FramedStream } from '../../protocol/framed-stream.ts'

describe('FramedStream after negotiation handed back read-ahead bytes', () => {
  it('reads the frame that came with the FIN, then reports the clean end', async () => {
    const [local, remote] = await streamPair()
    // A negotiation-like reader on the local side: it takes one byte and keeps the rest buffered.
    const negotiation = byteStream(local)
    const reason = new TextEncoder().encode('not-enrolled')
    remote.send(new Uint8Array([0x2a]))
    remote.send(encodeFramePrefix(reason.byteLength))
    remote.send(reason)
    await remote.close()
    expect((await negotiation.read({ bytes: 1 }))?.subarray()).toEqual(new Uint8Array([0x2a]))
    // The FIN has arrived: libp2p already calls the readable end ended, with our frame still held back.
    await new Promise<void>((resolve) =>
      local.readableEnded ? resolve() : local.addEventListener('end', () => resolve(), { once: true }),
    )
    negotiation.unwrap()
    const fs = new FramedStream(local)
    expect(await fs.read({ signal: AbortSignal.timeout(5_000) })).toEqual(reason)
    expect(await fs.read({ signal: AbortSignal.timeout(5_000) })).toBeUndefined()
  })
})
