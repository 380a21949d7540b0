/**
 * One agent's control stream as the coordinator holds it (control.ts): what the
 * agent said it runs, the manifests pushed to it, and the requests (ping,
 * diagnose) awaiting its reply.
 */
import { CodedError, errorMessage, raceSignal } from '../lib/index.ts'
import type { ConnectionPath, ConnectionTransport, FramedStream } from '../protocol/index.ts'
import { type ControlFrame, controlFrameSchema, encodeMessage } from '../protocol/index.ts'

/** Why a request to an agent over its control stream got no answer. */
export class AgentRequestError extends CodedError<'offline' | 'timeout' | 'unsupported' | 'closed'> {
  override name = 'AgentRequestError'
}

/** How a connected machine's control stream reaches the coordinator, and what its agent said it runs. */
export interface SessionInfo {
  path: ConnectionPath
  /** The transport under it (of the hop to the relay when relayed); null: neither TCP nor QUIC. */
  transport: ConnectionTransport | null
  /** The agent's address as the coordinator's end of the connection sees it. */
  remoteAddr: string
  software: string
  capabilities: readonly string[]
}

type Reply = Extract<ControlFrame, { t: 'pong' | 'diagnosis' }>

export class Session {
  readonly machine: string
  readonly fs: FramedStream
  readonly info: SessionInfo
  /** When the store last recorded this machine as seen. */
  seenAt = Date.now()
  #lastPushedManifest: string | undefined
  /** Manifests go out once the agent holds its revocations and tags: set just before it reads its own. */
  ready = false
  /** The agent's revocation list head seq as far as known; undefined: an agent without the list. */
  revocationSeq: number | undefined
  /** Sends of revocation entries, one after another. */
  revocationSync: Promise<void> = Promise.resolve()
  /** Requests sent to the agent, by nonce, awaiting the agent's reply. */
  readonly #awaiting = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>()

  constructor(machine: string, fs: FramedStream, info: SessionInfo) {
    this.machine = machine
    this.fs = fs
    this.info = info
  }

  get path(): ConnectionPath {
    return this.info.path
  }

  /** Sends a request frame and resolves with the agent's reply carrying the same nonce. */
  async request(frame: ControlFrame & { nonce: number }, timeoutMs: number, what: string): Promise<Reply> {
    const reply = new Promise<Reply>((resolve, reject) =>
      this.#awaiting.set(frame.nonce, { resolve, reject }),
    )
    // The stream may close while the send is still pending: that rejection is seen below, or by nobody.
    reply.catch(() => {})
    try {
      await this.send(frame).catch((err: unknown) => {
        throw new AgentRequestError(
          'closed',
          `cannot send ${what} to ${this.machine}: ${errorMessage(err)}`,
          { cause: err },
        )
      })
      return await raceSignal(reply, AbortSignal.timeout(timeoutMs)).catch((err: unknown) => {
        if (err instanceof AgentRequestError) throw err
        throw new AgentRequestError(
          'timeout',
          `the agent of ${this.machine} did not answer ${what} within ${timeoutMs / 1000} s`,
        )
      })
    } finally {
      this.#awaiting.delete(frame.nonce)
    }
  }

  /** A reply from the agent; one nobody waits for (any more) is dropped. */
  settle(reply: Reply): void {
    this.#awaiting.get(reply.nonce)?.resolve(reply)
  }

  /** Fails every request still waiting: the stream is gone. */
  close(): void {
    for (const { reject } of this.#awaiting.values())
      reject(
        new AgentRequestError('closed', `the control stream of ${this.machine} closed before it answered`),
      )
    this.#awaiting.clear()
  }

  async send(frame: ControlFrame): Promise<void> {
    await this.fs.send(encodeMessage(controlFrameSchema, frame))
  }

  async push(manifestId: string, frame: Uint8Array, counts: { manifestsPushed: number }): Promise<void> {
    if (!this.ready || this.#lastPushedManifest === manifestId) return
    this.#lastPushedManifest = manifestId
    await this.fs.send(frame).then(() => counts.manifestsPushed++)
  }
}
