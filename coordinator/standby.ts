/**
 * The coordinator's end of the standby link (protocol/standby.ts). It holds an
 * enrolled machine's quiet stream, so that the connection under it stays open
 * (the connection guard closes inbound connections without a stream) until the
 * machine's control link needs it. The stream goes when the agent ends it, when
 * it falls silent for STANDBY_SILENCE_MS, when a newer one from the same machine
 * arrives, or with the connection.
 */
import type { Connection } from '@libp2p/interface'
import {
  decodeMessage,
  encodeMessage,
  type FramedHandler,
  type FramedStream,
  MAX_STANDBY_FRAME_BYTES,
  STANDBY_SILENCE_MS,
  standbyFrameSchema,
} from '../protocol/index.ts'
import type { FleetStore } from './store.ts'

const ANSWER = encodeMessage(standbyFrameSchema, { t: 'standby' })

export class StandbyRefused extends Error {
  override name = 'StandbyRefused'
}

export function standbyHandler(
  store: Pick<FleetStore, 'getMachineByPeer'>,
  silenceMs = STANDBY_SILENCE_MS,
): FramedHandler {
  const held = new Map<string, FramedStream>()
  return async (fs: FramedStream, connection: Connection): Promise<void> => {
    const record = await store.getMachineByPeer(connection.remotePeer.toString())
    // Refused before reading anything: an unknown peer gets nothing held for it here.
    if (record === undefined)
      throw new StandbyRefused(`peer ${connection.remotePeer} is not an enrolled machine`)
    const previous = held.get(record.name)
    held.set(record.name, fs)
    previous?.abort(new Error('superseded by a newer standby stream from the same machine'))
    try {
      await fs.send(ANSWER) // held: the agent knows this coordinator takes its stream
      while (true) {
        // a silent agent is gone (or its path is): its read times out and the stream is reset
        const frame = await fs.read({ timeoutMs: silenceMs })
        if (frame === undefined) return // the agent ended it: it moved its control link here, or elsewhere
        decodeMessage(standbyFrameSchema, frame, 'standby frame', MAX_STANDBY_FRAME_BYTES)
      }
    } finally {
      if (held.get(record.name) === fs) held.delete(record.name)
    }
  }
}
