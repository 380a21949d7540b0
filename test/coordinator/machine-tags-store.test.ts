/**
 * The coordinator's store of signed tag records (coordinator/sqlite-tags.ts):
 * a batch is stored all or none, the tags it gives are what machines and scope
 * checks see, both survive a reopen, and a re-enrollment drops the record.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import type { TagChange } from '../../coordinator/sqlite-tags.ts'
import type { EnrollMachineInput, FleetStore } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { MachineTagsRefusedError } from '../../protocol/index.ts'

const hex = (n: number) => randomBytes(n).toString('hex')

let dir: string
let dbPath: string
let store: FleetStore
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-tags-store-'))
  dbPath = join(dir, 'coordinator.db')
  store = await openSqliteStore(dbPath)
})
afterEach(async () => {
  await store.close()
  await rm(dir, { recursive: true, force: true })
})

const key = (name: string) => {
  const k = PrivateKey.generate()
  return { name, peerId: k.toPeerId().toString(), publicKey: k.publicKey.toString() }
}
const enroll = (m: ReturnType<typeof key>, tags: string[]): EnrollMachineInput => ({
  ...m,
  tags,
  facts: {},
  nonce: hex(16),
  at: 1000,
})
const change = (machine: string, from: string[], tags: string[], version: number): TagChange => ({
  machine,
  from,
  tags,
  version,
  envelope: Uint8Array.of(version),
  signedBy: 'admin',
  at: 2000,
})

describe('machine tag records in the store', () => {
  it('stores a batch, and the tags and versions survive a reopen', async () => {
    const edge = key('edge-1')
    await store.enrollMachine(enroll(edge, ['lab']))
    await store.enrollMachine(enroll(key('edge-2'), ['lab']))
    await store.machineTags.apply([
      change('edge-1', ['lab'], ['eu', 'lab'], 1),
      change('edge-2', ['lab'], [], 1),
    ])
    await store.close()
    store = await openSqliteStore(dbPath, { create: false })
    expect((await store.getMachine('edge-1'))?.tags).toEqual(['eu', 'lab'])
    expect((await store.getMachine('edge-2'))?.tags).toEqual([])
    expect(await store.machineTags.get('edge-1')).toMatchObject({ version: 1, envelope: Uint8Array.of(1) })
    expect(await store.machineTags.versions()).toEqual(
      new Map([
        ['edge-1', 1],
        ['edge-2', 1],
      ]),
    )
  })

  it('stores nothing of a batch when one change is stale', async () => {
    await store.enrollMachine(enroll(key('edge-1'), ['lab']))
    await store.enrollMachine(enroll(key('edge-2'), ['lab']))
    await store.machineTags.apply([change('edge-2', ['lab'], ['lab', 'x'], 1)])
    const stale = store.machineTags.apply([
      change('edge-1', ['lab'], ['eu'], 1),
      change('edge-2', ['lab', 'x'], ['y'], 1),
    ])
    await expect(stale).rejects.toBeInstanceOf(MachineTagsRefusedError)
    await expect(stale).rejects.toMatchObject({ code: 'stale-version' })
    // checked against other tags than it now has: also refused
    await expect(store.machineTags.apply([change('edge-2', ['lab'], ['y'], 2)])).rejects.toMatchObject({
      code: 'stale-version',
    })
    expect((await store.getMachine('edge-1'))?.tags).toEqual(['lab'])
    expect(await store.machineTags.get('edge-1')).toBeUndefined()
    expect((await store.getMachine('edge-2'))?.tags).toEqual(['lab', 'x'])
  })

  it('drops the record when the machine enrolls again with a fresh token', async () => {
    const edge = key('edge-1')
    await store.enrollMachine(enroll(edge, ['lab']))
    await store.machineTags.apply([change('edge-1', ['lab'], ['eu'], 1)])
    await store.enrollMachine(enroll(edge, ['prod']))
    expect((await store.getMachine('edge-1'))?.tags).toEqual(['prod'])
    expect(await store.machineTags.get('edge-1')).toBeUndefined()
  })
})
