/**
 * ClusterMember, one coordinator's part in a fleet served by several, against
 * an in-process channel: notes from other coordinators become pushes to its own
 * agents and fleet events, its own sessions are announced, and the agents of a
 * coordinator that fell silent (killed) count as offline after three alive
 * intervals. The PostgreSQL channel itself is tested with real processes in
 * pg-multi.test.ts.
 */
import { describe, expect, it, vi } from 'vitest'
import { ClusterMember } from '../../coordinator/cluster.ts'
import type {
  ClusterChannel,
  ClusterHandlers,
  ClusterNote,
  OwnNote,
} from '../../coordinator/cluster-channel.ts'
import { type FleetEvent, FleetEvents } from '../../coordinator/events.ts'
import type { FleetStore } from '../../coordinator/store.ts'

function member(aliveMs = 10_000) {
  let handlers: ClusterHandlers | undefined
  const published: OwnNote[] = []
  const channel: ClusterChannel = {
    origin: 'self',
    listen: (h) => {
      handlers = h
    },
    publish: async (note) => {
      published.push(note)
    },
    lease: () => {},
    offerCoordinatorList: async () => {},
    coordinatorList: async () => undefined,
    close: async () => {},
  }
  const pushed: string[][] = []
  const control = {
    online: new Map<string, unknown>(),
    pushDesired: async (machines: readonly string[]) => {
      pushed.push([...machines])
    },
    pushTags: async () => {},
    pushRevocations: () => {},
    pushCoordinatorList: () => {},
    sessionInfo: () => undefined,
  }
  const events = new FleetEvents()
  const seen: FleetEvent[] = []
  events.on((e) => seen.push(e))
  const rollouts = {
    lead: vi.fn(async () => {}),
    standBy: vi.fn(),
    noteChanged: vi.fn(async () => {}),
    recheck: async () => {},
  }
  const m = new ClusterMember({
    channel,
    store: {} as FleetStore,
    control,
    events,
    rollouts,
    roster: { refresh: async () => false },
    log: () => {},
    aliveMs,
  })
  m.start()
  const note = (n: ClusterNote) => handlers?.note(n)
  return { m, note, pushed, published, events, seen, rollouts }
}

describe('ClusterMember', () => {
  it('pushes desired states another coordinator set to its own agents, one push per turn', async () => {
    const { m, note, pushed } = member()
    for (const machine of ['a', 'b', 'c']) note({ k: 'desired', o: 'other', machine })
    await new Promise((resolve) => setImmediate(resolve))
    expect(pushed).toEqual([['a', 'b', 'c']])
    m.stop()
  })

  it('announces its own sessions and not those it heard of', () => {
    const { m, note, events, published } = member()
    events.emit({ type: 'online', machine: 'here', path: 'direct' })
    note({ k: 'online', o: 'other', machine: 'there', path: 'relayed' })
    events.emit({ type: 'offline', machine: 'here' })
    expect(published).toEqual([
      { k: 'online', machine: 'here', path: 'direct' },
      { k: 'offline', machine: 'here' },
    ])
    m.stop()
  })

  it("counts a silent coordinator's agents as offline after three alive intervals", async () => {
    const { m, note, seen } = member(20)
    note({ k: 'online', o: 'killed', machine: 'edge-1', path: 'direct' })
    expect(m.onlineElsewhere('edge-1')).toBe(true)
    await vi.waitFor(
      () => expect(seen.some((e) => e.type === 'offline' && e.machine === 'edge-1')).toBe(true),
      {
        timeout: 2_000,
      },
    )
    expect(m.onlineElsewhere('edge-1')).toBe(false)
    m.stop()
  })

  it('keeps the agents of a coordinator that keeps saying it is alive', async () => {
    const { m, note } = member(50)
    note({ k: 'online', o: 'live', machine: 'edge-2', path: 'direct' })
    const alive = setInterval(() => note({ k: 'alive', o: 'live' }), 10)
    // an absence is asserted: time has to pass, here many times the 150 ms of silence that would drop it
    await new Promise((resolve) => setTimeout(resolve, 500))
    clearInterval(alive)
    expect(m.onlineElsewhere('edge-2')).toBe(true)
    m.stop()
  })
})
