/**
 * A fake coordinator on a real libp2p host, for the agent control link's tests
 * (a stand-in: it speaks the control protocol from a script, with no store):
 * it answers the agent's hello (with `hello` merged into its reply; once
 * `answerWhen` resolves, if given), then hands the stream and the agent's hello
 * to `script`. {@link linkTo} makes the agent's side.
 */
import type { Connection } from '@libp2p/interface'
import { CoordinatorLink } from '../../agent/link.ts'
import type { LinkInit } from '../../agent/link-init.ts'
import type { FleetHost } from '../../net/index.ts'
import {
  type ControlFrame,
  controlFrameSchema,
  decodeControlFrame,
  encodeMessage,
  type FramedStream,
  handleFramed,
  MAX_ENVELOPE_BYTES,
  PROTOCOLS,
  WIRE_VERSION,
} from '../../protocol/index.ts'

type CoordinatorHello = Extract<ControlFrame, { t: 'hello' }>

/** Resolves once the fake listens; `result` settles with what the script returns (or its error). */
export async function fakeCoordinator<T>(
  host: (role: 'coordinator') => Promise<FleetHost>,
  script: (fs: FramedStream, hello: ControlFrame, connection: Connection) => Promise<T>,
  hello: Partial<CoordinatorHello> = {},
  answerWhen: (agentHello: ControlFrame) => Promise<void> = async () => {},
): Promise<{ result: Promise<T>; coordinator: FleetHost }> {
  const coordinator = await host('coordinator')
  let settle!: { resolve: (v: T) => void; reject: (e: unknown) => void }
  const result = new Promise<T>((resolve, reject) => {
    settle = { resolve, reject }
  })
  await handleFramed(
    coordinator,
    PROTOCOLS.control,
    async (fs, connection) => {
      try {
        const theirs = decodeControlFrame((await fs.read()) as Uint8Array, MAX_ENVELOPE_BYTES)
        if ('unknown' in theirs) throw new Error('expected the agent hello')
        await answerWhen(theirs)
        const reply: ControlFrame = {
          t: 'hello',
          wire: WIRE_VERSION,
          role: 'coordinator',
          software: 'fleetmesh/future',
          capabilities: [],
          ...hello,
        }
        await fs.send(encodeMessage(controlFrameSchema, reply))
        settle.resolve(await script(fs, theirs, connection))
      } catch (err) {
        settle.reject(err)
      }
    },
    { maxFrameBytes: MAX_ENVELOPE_BYTES + 4096 },
  )
  return { result, coordinator }
}

/** The next frame from the agent, skipping its keepalive pings; undefined when the stream ends. */
export async function nextFrame(fs: FramedStream): Promise<ControlFrame | undefined> {
  while (true) {
    const bytes = await fs.read()
    if (bytes === undefined) return undefined
    const frame = decodeControlFrame(bytes, MAX_ENVELOPE_BYTES + 4096)
    if ('unknown' in frame) throw new Error(`agent sent an unknown "${frame.unknown}" frame`)
    if (frame.t !== 'ping') return frame
  }
}

/**
 * An agent's control link to `coordinator`, as machine edge-1, with an empty
 * report queue and no retry within a test's time (`init` overrides); not started.
 */
export function linkTo(
  agent: FleetHost,
  coordinator: FleetHost,
  init: Partial<LinkInit> = {},
): CoordinatorLink {
  return new CoordinatorLink({
    host: agent,
    coordinator: coordinator.peerId,
    coordinatorAddrs: coordinator.getMultiaddrs(),
    machine: 'edge-1',
    queue: { pending: async () => [], ack: async () => {} },
    onManifest: () => {},
    backoffInitialMs: 60_000,
    ...init,
  })
}
