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
import type { FleetStore, ManifestRecord } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { nixManifest, sampleManifest } from '../../testkit/fixtures.ts'
import { manifestRecord } from '../../testkit/manifest-record.ts'

/** A stored manifest as the store gives it back, with its envelope signed by a throwaway admin. */
function stored(manifest = sampleManifest()): ManifestRecord {
  return { ...manifestRecord(manifest, PrivateKey.generate()), machines: ['edge-1'] }
}

function member(aliveMs = 10_000, manifests: ManifestRecord[] = [], blobsHere: string[] = []) {
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
    store: { getManifest: async (id: string) => manifests.find((r) => r.id === id) } as FleetStore,
    control,
    events,
    rollouts,
    roster: { refresh: async () => false },
    blobs: {
      dir: '/srv/fleet-blobs',
      size: async (sha256) => (blobsHere.includes(sha256) ? 1234 : undefined),
    },
    log: (msg) => logged.push(msg),
    aliveMs,
  })
  const logged: string[] = []
  m.start()
  const note = (n: ClusterNote) => handlers?.note(n)
  return { m, note, pushed, published, events, seen, rollouts, logged }
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

  it("says at once when a manifest stored elsewhere names an archive that is not in this coordinator's blobs", async () => {
    const missing = sampleManifest()
    const present = sampleManifest({ sequence: 8 })
    const shaOf = (m: typeof missing) => (m.payload.kind === 'archive' ? m.payload.sha256 : '')
    const nix = nixManifest() // closures are looked up path by path when asked for, not here
    const records = [stored(missing), stored(present), stored(nix)]
    const { m, note, seen, logged } = member(10_000, records, [shaOf(present)])
    for (const id of [present.id, nix.id, missing.id]) note({ k: 'manifest', o: 'other', id })
    await vi.waitFor(() => expect(seen.filter((e) => e.type === 'manifest')).toHaveLength(3))
    await vi.waitFor(() => expect(logged).toHaveLength(1))
    expect(logged[0]).toContain(`manifest ${missing.id} names archive ${shaOf(missing)}`)
    expect(logged[0]).toContain('/srv/fleet-blobs')
    expect(logged[0]).toContain('must share --blobs')
    m.stop()
  })
})
