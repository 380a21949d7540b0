// Mixed versions on one control stream: a coordinator newer than the agent may
// send frame types the agent does not know. The agent must skip them and keep
// the link (the control stream carries the very upgrade that would teach it
// the new type), and it answers what it does know: ping, and diagnose when it
// offers the capability. A fake coordinator on a real libp2p host drives it.
import { afterEach, describe, expect, it } from 'vitest'
import type { CoordinatorLink, LinkState } from '../../agent/link.ts'
import { encodeCanonical } from '../../keys/index.ts'
import type { FleetHost } from '../../net/index.ts'
import {
  type AgentDiagnosis,
  type ControlFrame,
  controlFrameSchema,
  DIAGNOSE_CAPABILITY,
  encodeMessage,
} from '../../protocol/index.ts'
import { fakeCoordinator as fake, linkTo, nextFrame } from './fake-coordinator.ts'
import { loopbackHosts } from './hosts.ts'

const { host, stopAll } = loopbackHosts()
const links: CoordinatorLink[] = []

afterEach(async () => {
  for (const link of links.splice(0)) await link.stop()
  await stopAll()
})

const fakeCoordinator = <T>(script: Parameters<typeof fake<T>>[1]) => fake(host, script)

const diagnosis: AgentDiagnosis = {
  machine: 'edge-1',
  software: 'fleetmesh-agent/test',
  snapshot: {
    role: 'agent',
    pid: 1,
    peerId: 'agent',
    at: 1,
    listen: ['/ip4/127.0.0.1/tcp/1'],
    advertised: [],
    connections: [],
    details: {},
  },
  interfaces: [],
  coordinator: { peerId: 'coordinator', addrs: [] },
  truncated: false,
}

async function startLink(coordinator: FleetHost, withDiagnose: boolean): Promise<LinkState[]> {
  const agent = await host('agent')
  const states: LinkState[] = []
  const link = linkTo(agent, coordinator, {
    ...(withDiagnose ? { diagnose: () => diagnosis } : {}),
    onState: (state) => states.push(state),
  })
  links.push(link)
  link.start()
  return states
}

describe('agent control link and frame types it does not know', () => {
  it('skips an unknown frame and keeps answering on the same stream', async () => {
    const { result, coordinator } = await fakeCoordinator(async (fs) => {
      // A newer coordinator's message, then one this agent knows.
      await fs.send(encodeCanonical({ t: 'rollout-hint', nonce: 7, detail: 'from the future' }))
      await fs.send(encodeMessage(controlFrameSchema, { t: 'ping', nonce: 4242 }))
      return await nextFrame(fs)
    })
    const states = await startLink(coordinator, false)
    expect(await result).toEqual({ t: 'pong', nonce: 4242 })
    expect(states.filter((s) => !s.connected)).toEqual([])
  })

  it('offers diagnose in its hello and answers it with its diagnosis', async () => {
    let hello: ControlFrame | undefined
    const { result, coordinator } = await fakeCoordinator(async (fs, h) => {
      hello = h
      await fs.send(encodeMessage(controlFrameSchema, { t: 'diagnose', nonce: 9 }))
      return await nextFrame(fs)
    })
    await startLink(coordinator, true)
    expect(await result).toEqual({ t: 'diagnosis', nonce: 9, report: diagnosis })
    expect(hello?.t === 'hello' && hello.capabilities).toContain(DIAGNOSE_CAPABILITY)
  })
})
