/**
 * Yamux window updates sent as go-yamux sends them: once half a stream's
 * receive window has been used, not after every frame.
 *
 * @chainsafe/libp2p-yamux answers every data frame it receives with a window
 * update frame: for a coordinator, one more frame to encrypt and one more
 * socket write for each status report it reads, and for the agent one more
 * frame to read and decrypt (sendWindowUpdate was 3–10 % of both sides'
 * main threads in the bench's burst and fan-out). go-yamux and rust-yamux send
 * an update only when the window used reaches half the window, or a flag (SYN
 * or ACK) must go out; the sender then still has half its window, so it never
 * waits for the update. {@link deferYamuxWindowUpdates} makes js-yamux do the
 * same, for every stream in this process (the class is shared, its instances
 * are made inside the muxer).
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** The fields of a yamux stream the rule reads (private in the library's types). */
interface WindowFields {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

let deferred = false

/** Whether a window update can wait: no flag due, not paused, and less than half the window used. */
export function windowUpdateCanWait(stream: WindowFields): boolean {
  if (stream.state !== StreamState.Established && stream.state !== StreamState.SYNSent) return false
  return stream.recvWindow - stream.recvWindowCapacity < stream.recvWindow / 2
}

/** Installs the rule once per process; fields the rule does not find (another version) leave the library's own behaviour. */
export function deferYamuxWindowUpdates(): void {
  if (deferred) return
  deferred = true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate(this: unknown): void }
  const sendEveryTime = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: unknown): void {
    const s = this as Partial<WindowFields>
    if (
      typeof s.recvWindow === 'number' &&
      typeof s.recvWindowCapacity === 'number' &&
      windowUpdateCanWait(s as WindowFields)
    )
      return
    sendEveryTime.call(this)
  }
}
