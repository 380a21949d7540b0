// The standby link: an agent of a fleet with two coordinators holds a quiet
// stream (and so a handshaken connection) to the one it would fail over to, and
// when its coordinator goes, its control link opens on that very connection: a
// failover then costs the new coordinator a hello, not a dial, a Noise handshake
// and identify. The coordinator's end (coordinator/standby.ts) holds streams of
// enrolled machines only, and drops one that falls silent. Real libp2p hosts on
// loopback; the coordinators' control side is the fake of fake-coordinator.ts,
// their standby side the real handler over a stand-in store lookup.
import { mkdtemp, rm } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Connection } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { Failover, type FailoverInit } from '../../agent/failover.ts'
import { StandbyRefused, standbyHandler } from '../../coordinator/standby.ts'
import { PrivateKey } from '../../keys/index.ts'
import type { FleetHost } from '../../net/index.ts'
import { type CoordinatorEntry, handleFramed, PROTOCOLS, signCoordinatorList } from '../../protocol/index.ts'
import { fakeCoordinator, linkTo } from './fake-coordinator.ts'
import { loopbackHosts } from './hosts.ts'

const { host, stopAll } = loopbackHosts()
const cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const done of cleanup.splice(0).reverse()) await done()
  await stopAll()
})

const root = PrivateKey.generate()
const fleet = { fleetRoot: root.publicKey, fleetId: 'acme' }
const entryOf = (h: FleetHost): CoordinatorEntry => ({
  peerId: h.peerId.toString(),
  addrs: h.getMultiaddrs().map((a) => a.decapsulateCode(421).toString()),
})

/** The fleet root's coordinator list (version 2) naming these coordinators, as a coordinator sends it. */
const listOf = (...coordinators: CoordinatorEntry[]) =>
  signCoordinatorList(root, { fleetId: 'acme', version: 2, issuedAt: Date.now(), coordinators })

type Event = [string, Record<string, unknown>]

/** The agent's events, and a wait for the first (from now on) that matches. */
function eventLog() {
  const events: Event[] = []
  const waiters: { match: (e: Event) => boolean; resolve: (e: Event) => void }[] = []
  return {
    events,
    emit: (event: string, fields: Record<string, unknown>) => {
      const e: Event = [event, fields]
      events.push(e)
      for (const w of waiters.splice(0)) w.match(e) ? w.resolve(e) : waiters.push(w)
    },
    next: (match: (e: Event) => boolean) => new Promise<Event>((resolve) => waiters.push({ match, resolve })),
  }
}

/** A coordinator host's standby side: the real handler, and the connections it held a stream on. */
async function standbySide(coordinator: FleetHost, enrolled: (peer: string) => boolean, silenceMs?: number) {
  const held: Connection[] = []
  const refused: Error[] = []
  const record = { name: 'edge-1' }
  const handler = standbyHandler(
    { getMachineByPeer: async (peer) => (enrolled(peer) ? (record as never) : undefined) },
    silenceMs,
  )
  await handleFramed(coordinator, PROTOCOLS.standby, async (fs, connection) => {
    held.push(connection)
    await handler(fs, connection).catch((err: Error) => {
      refused.push(err)
      throw err
    })
  })
  return { held, refused }
}

async function agentFailover(
  agent: FleetHost,
  a: FleetHost,
  log: ReturnType<typeof eventLog>,
  pingMs = 10_000,
  more: { dialTimeoutMs?: number; finderFor?: FailoverInit['finderFor'] } = {},
) {
  const dir = await mkdtemp(join(tmpdir(), 'fm-standby-'))
  cleanup.push(() => rm(dir, { recursive: true, force: true }))
  const failover = await Failover.open({
    stateDir: dir,
    fleet,
    enrolled: entryOf(a),
    finderFor: more.finderFor ?? (() => undefined),
    allow: () => {},
    emit: log.emit,
    standby: {
      host: agent,
      settleMs: 0,
      pingMs,
      backoffInitialMs: 50,
      ...(more.dialTimeoutMs ? { dialTimeoutMs: more.dialTimeoutMs } : {}),
    },
  })
  cleanup.push(() => failover.stop())
  return failover
}

describe('the standby link', () => {
  it('holds a connection to the next coordinator, and the control link fails over onto it', async () => {
    const agent = await host('agent')
    const a = await fakeCoordinator(host, async (fs) => {
      while ((await fs.read().catch(() => undefined)) !== undefined) {} // holds the session until its host stops
    })
    const b = await fakeCoordinator(host, async (_fs, hello, connection) => ({ hello, connection }))
    const atB = await standbySide(b.coordinator, (peer) => peer === agent.peerId.toString())
    const log = eventLog()
    const failover = await agentFailover(agent, a.coordinator, log)
    const held = log.next(([e, f]) => e === 'standby' && f.held === true)
    await failover.receive(listOf(entryOf(a.coordinator), entryOf(b.coordinator)))
    expect((await held)[1].peerId).toBe(b.coordinator.peerId.toString())
    expect(atB.held).toHaveLength(1)

    let onA!: () => void
    const connectedToA = new Promise<void>((resolve) => {
      onA = resolve
    })
    const link = linkTo(agent, a.coordinator, {
      coordinators: failover,
      backoffInitialMs: 50,
      onState: (state) => {
        if (state.connected && failover.peer().equals(a.coordinator.peerId)) onA()
      },
    })
    link.start()
    cleanup.push(() => link.stop())
    await connectedToA
    // coordinator A goes: it takes no more control streams, and its connections close
    await a.coordinator.unhandle(PROTOCOLS.control)
    for (const c of a.coordinator.getConnections()) await c.close()
    const { connection } = await b.result
    expect(connection.id).toBe(atB.held[0]?.id)
    expect(b.coordinator.getConnections(agent.peerId)).toHaveLength(1)
  })

  it('is refused by a coordinator that does not know the machine, and the agent says so', async () => {
    const agent = await host('agent')
    const a = await host('coordinator')
    const b = await host('coordinator')
    const atB = await standbySide(b, () => false)
    const log = eventLog()
    const failover = await agentFailover(agent, a, log)
    const lost = log.next(([e, f]) => e === 'standby' && f.held === false)
    await failover.receive(listOf(entryOf(a), entryOf(b)))
    expect(typeof (await lost)[1].error).toBe('string')
    expect(atB.refused[0]).toBeInstanceOf(StandbyRefused)
    expect(atB.refused[0]?.message).toContain('is not an enrolled machine')
    expect(log.events.some(([e, f]) => e === 'standby' && f.held === true)).toBe(false)
  })

  it('is dropped by the coordinator when it falls silent, and held again by the agent', async () => {
    const agent = await host('agent')
    const a = await host('coordinator')
    const b = await host('coordinator')
    // the coordinator waits 300 ms for a frame; the agent sends one every 10 s
    const atB = await standbySide(b, () => true, 300)
    const log = eventLog()
    const failover = await agentFailover(agent, a, log)
    const held = log.next(([e, f]) => e === 'standby' && f.held === true)
    await failover.receive(listOf(entryOf(a), entryOf(b)))
    await held
    const dropped = await log.next(([e, f]) => e === 'standby' && f.held === false)
    expect(typeof dropped[1].error).toBe('string')
    expect(atB.refused[0]?.name).toBe('TimeoutError')
    await log.next(([e, f]) => e === 'standby' && f.held === true)
    expect(atB.held.length).toBeGreaterThanOrEqual(2)
  })

  it('stops at once while it is still trying to reach the next coordinator', async () => {
    const agent = await host('agent')
    const a = await host('coordinator')
    // B's address refuses at once; looking it up then never ends, until the dial's budget (ten minutes) does
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise((resolve) => closed.close(resolve))
    const b = { peerId: PrivateKey.generate().toPeerId().toString(), addrs: [`/ip4/127.0.0.1/tcp/${port}`] }
    let lookingUp!: () => void
    const lookup = new Promise<void>((resolve) => {
      lookingUp = resolve
    })
    const discover = (signal: AbortSignal) =>
      new Promise<never>((_, reject) => {
        lookingUp()
        signal.addEventListener('abort', () => reject(signal.reason))
      })
    const log = eventLog()
    const failover = await agentFailover(agent, a, log, 10_000, {
      dialTimeoutMs: 600_000,
      finderFor: (peerId) => (peerId === b.peerId ? discover : undefined),
    })
    await failover.receive(listOf(entryOf(a), b))
    await lookup
    // a stop that waited for the lookup's ten minutes would outlast the test's own timeout
    await failover.stop()
    expect(log.events.some(([e, f]) => e === 'standby' && f.held === true)).toBe(false)
  }, 20_000)
})
