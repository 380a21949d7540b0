/**
 * The agent's copy of the fleet's coordinator list (agent/coordinators.ts) and
 * the choice of coordinator it makes from it (agent/failover.ts): only a list
 * the fleet root signed for this fleet is taken, only a newer one replaces the
 * one held, the one taken survives a restart, a damaged file is reported and
 * set aside (the enrollment coordinator still works), and after a lost
 * coordinator the next of the list is dialed, round the end.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { KnownCoordinators } from '../../agent/coordinators.ts'
import { Failover } from '../../agent/failover.ts'
import { PrivateKey } from '../../keys/index.ts'
import {
  COORDINATOR_LIST_FILE,
  type CoordinatorEntry,
  MAX_ENVELOPE_BYTES,
  signCoordinatorList,
} from '../../protocol/index.ts'
import { removeDir, tempDir } from './fixtures.ts'

const root = PrivateKey.generate()
const fleet = { fleetRoot: root.publicKey, fleetId: 'acme' }
const entry = (port: number): CoordinatorEntry => ({
  peerId: PrivateKey.generate().toPeerId().toString(),
  addrs: [`/ip4/127.0.0.1/tcp/${port}`],
})
const [a, b, c] = [entry(4001), entry(4002), entry(4003)]
/** The enrollment coordinator `a`, as the agent's enrollment file has it (another address). */
const enrolled: CoordinatorEntry = { peerId: a.peerId, addrs: ['/ip4/10.0.0.1/tcp/4001'] }
const signed = (version: number, coordinators: CoordinatorEntry[], by = root, fleetId = 'acme') =>
  signCoordinatorList(by, { fleetId, version, issuedAt: Date.now(), coordinators })

let dir: string
let logged: string[]
beforeEach(async () => {
  dir = await tempDir()
  logged = []
})
afterEach(() => removeDir(dir))

const open = () => KnownCoordinators.open(dir, fleet, enrolled, (m) => logged.push(m))

describe("the agent's coordinator list", () => {
  it('knows only the enrollment coordinator until a list arrives', async () => {
    const known = await open()
    expect(known.list).toBeUndefined()
    expect(known.entries()).toEqual([enrolled])
    expect(known.after(a.peerId)).toEqual(enrolled)
    expect(logged).toEqual([])
  })

  it('takes a newer list, keeps it on disk, and takes it again after a restart', async () => {
    const known = await open()
    const envelope = signed(2, [a, b])
    expect(await known.take(envelope)).toBe('taken')
    expect(new Uint8Array(await readFile(join(dir, COORDINATOR_LIST_FILE)))).toEqual(envelope)
    const again = await open()
    expect(again.list?.version).toBe(2)
    // the enrollment coordinator keeps the addresses it was enrolled at, and gains the listed ones
    expect(again.entries()).toEqual([{ peerId: a.peerId, addrs: [...enrolled.addrs, ...a.addrs] }, b])
    expect(await again.take(envelope)).toBe('current')
  })

  it('refuses an older list, and keeps the newer one it holds', async () => {
    const known = await open()
    await known.take(signed(3, [a, b, c]))
    expect(await known.take(signed(2, [a, b]))).toBe('older')
    expect(known.list?.version).toBe(3)
    expect((await open()).list?.version).toBe(3)
  })

  it('refuses a list not signed by the fleet root, or signed for another fleet', async () => {
    const known = await open()
    await known.take(signed(2, [a, b]))
    const admin = PrivateKey.generate()
    await expect(known.take(signed(5, [a, c], admin))).rejects.toMatchObject({ code: 'not-root' })
    await expect(known.take(signed(5, [a, c], root, 'other'))).rejects.toMatchObject({ code: 'wrong-fleet' })
    await expect(known.take(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({ code: 'malformed' })
    expect(known.list?.version).toBe(2)
    expect((await open()).list?.version).toBe(2)
  })

  it('reports a damaged or oversized file and goes on with the enrollment coordinator', async () => {
    await writeFile(join(dir, COORDINATOR_LIST_FILE), 'not a signed list')
    const damaged = await open()
    expect(damaged.entries()).toEqual([enrolled])
    expect(logged).toHaveLength(1)
    expect(logged[0]).toContain(join(dir, COORDINATOR_LIST_FILE))
    expect(logged[0]).toContain('going on with the enrollment coordinator')
    // a list a coordinator sends then replaces it
    expect(await damaged.take(signed(1, [a, b]))).toBe('taken')

    await writeFile(join(dir, COORDINATOR_LIST_FILE), new Uint8Array(MAX_ENVELOPE_BYTES + 1))
    const huge = await open()
    expect(huge.entries()).toEqual([enrolled])
    expect(logged[1]).toContain('more than a signed list can be')
  })

  it('goes round the list from the coordinator after the lost one', async () => {
    const known = await open()
    await known.take(signed(2, [b, a, c]))
    expect(known.after(b.peerId).peerId).toBe(a.peerId)
    expect(known.after(a.peerId).peerId).toBe(c.peerId)
    expect(known.after(c.peerId).peerId).toBe(b.peerId)
    // one no longer listed: the list's first
    expect(known.after(entry(1).peerId).peerId).toBe(b.peerId)
  })
})

describe("the agent's choice of coordinator", () => {
  const events: [string, Record<string, unknown>][] = []
  const failover = () =>
    Failover.open({
      stateDir: dir,
      fleet,
      enrolled,
      finderFor: () => undefined,
      allow: () => {},
      emit: (event, fields) => events.push([event, fields]),
    })
  beforeEach(() => {
    events.length = 0
  })

  it('starts with the enrollment coordinator and moves to the next listed one when it is lost', async () => {
    const f = await failover()
    expect(f.current().peer.toString()).toBe(a.peerId)
    f.next() // no list: the enrollment coordinator is the only one
    expect(f.peer().toString()).toBe(a.peerId)
    await f.receive(signed(2, [a, b]))
    expect(events).toEqual([['coordinators', { version: 2, coordinators: [a.peerId, b.peerId] }]])
    f.next()
    expect(f.peer().toString()).toBe(b.peerId)
    expect(f.current().addrs.map(String)).toEqual(b.addrs)
    expect(f.describe({ connected: true, path: 'direct', addr: b.addrs[0] as string })).toEqual({
      connected: true,
      path: 'direct',
      addr: b.addrs[0],
      peerId: b.peerId,
      coordinators: 2,
      listVersion: 2,
    })
    f.next()
    expect(f.peer().toString()).toBe(a.peerId)
  })

  it('passes over a listed coordinator it cannot dial (not a peer id it reads), with a warning', async () => {
    const f = await failover()
    const odd = { peerId: 'not-a-peer-id', addrs: [] }
    await f.receive(signed(2, [a, odd, c]))
    f.next()
    expect(f.peer().toString()).toBe(c.peerId)
    expect(events.at(-1)?.[1]).toMatchObject({ context: 'coordinator-list' })
    expect(String(events.at(-1)?.[1].message)).toContain('cannot dial listed coordinator not-a-peer-id')
    // only unreadable ones besides the current: it stays where it is
    await f.receive(signed(3, [c, odd]))
    f.next()
    expect(f.peer().toString()).toBe(c.peerId)
  })

  it('warns of a list it refuses, and keeps going with the one it holds', async () => {
    const f = await failover()
    await f.receive(signed(2, [a, b]))
    await f.receive(signed(3, [c], PrivateKey.generate()))
    await f.receive(signed(1, [a]))
    expect(events.slice(1).map(([event, fields]) => [event, fields.context])).toEqual([
      ['warning', 'coordinator-list'],
      ['warning', 'coordinator-list'],
    ])
    expect(String(events[1]?.[1].message)).toContain('not by the fleet root')
    expect(String(events[2]?.[1].message)).toContain('older than version 2')
    expect(f.size).toBe(2)
  })
})
