/**
 * The coordinator's store of signed tag records (coordinator/sqlite-tags.ts):
 * a batch is stored all or none, the tags it gives are what machines and scope
 * checks see, both survive a reopen, and a re-enrollment drops the record. A
 * fleet file's apply (store-bundle.ts) stores tag records and rollouts all or none.
 */
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { TagChange } from '../../coordinator/sqlite-tags.ts'
import type { EnrollMachineInput, FleetStore, NewManifest } from '../../coordinator/store.ts'
import { PrivateKey } from '../../keys/index.ts'
import { MachineTagsRefusedError, parseShare } from '../../protocol/index.ts'
import { describeStores } from '../../testkit/stores.ts'

const hex = (n: number) => randomBytes(n).toString('hex')

let store: FleetStore

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

describeStores((kind) => {
  beforeEach(async () => {
    store = await kind.open()
  })
  afterEach(async () => {
    await store.close()
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
      store = await kind.reopen()
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

  const manifest = (sequence: number, machines: string[]): NewManifest => ({
    id: hex(16),
    sequence,
    rolloutId: hex(16),
    generation: `g${sequence}`,
    targets: { machines, tags: [] },
    envelope: Uint8Array.of(sequence),
    submittedBy: 'admin',
    submittedAt: 2000,
    expiresAt: 10 ** 13,
  })
  const inWaves = (release: NewManifest, plan: string[][]) => ({
    rollout: {
      release,
      rollbacks: [],
      policy: {
        waves: plan.map(() => parseShare('100%') ?? { count: 0 }),
        maxFailures: { count: 0 },
        soakMs: 0,
        onFailure: 'halt' as const,
        canaryTag: null,
        offlineTimeoutMs: 60_000,
      },
      plan,
      at: 2000,
    },
  })

  describe("a fleet file's apply in the store", () => {
    it('stores tags, manifests and rollouts in waves all or none, each step above the one before', async () => {
      await store.enrollMachine(enroll(key('edge-1'), ['lab']))
      await store.enrollMachine(enroll(key('edge-2'), ['lab']))
      await store.enrollMachine(enroll(key('edge-3'), ['lab']))
      const tags = [change('edge-1', ['lab'], ['eu', 'lab'], 1)]
      // the rollout in waves reuses the first manifest's sequence: the last step fails
      const first = manifest(1, ['edge-1'])
      const refused = store.applyBundle(tags, [
        { manifest: first, machines: ['edge-1'] },
        inWaves(manifest(1, ['edge-2', 'edge-3']), [['edge-2'], ['edge-3']]),
      ])
      await expect(refused).rejects.toMatchObject({ code: 'stale-sequence' })
      expect((await store.getMachine('edge-1'))?.tags).toEqual(['lab'])
      expect(await store.machineTags.get('edge-1')).toBeUndefined()
      expect(await store.maxSequence()).toBe(0)
      expect(await store.getDesired('edge-1')).toBeUndefined()
      expect(await store.rollouts.list(10)).toEqual([])

      const release = manifest(2, ['edge-2', 'edge-3'])
      const stored = await store.applyBundle(tags, [
        { manifest: first, machines: ['edge-1'] },
        inWaves(release, [['edge-2'], ['edge-3']]),
      ])
      expect(stored.map((r) => r.id)).toEqual([first.id, release.rolloutId])
      expect((await store.getMachine('edge-1'))?.tags).toEqual(['eu', 'lab'])
      expect((await store.getDesired('edge-1'))?.id).toBe(first.id)
      // a rollout in waves sets only its first wave's desired state
      expect((await store.getDesired('edge-2'))?.id).toBe(release.id)
      expect(await store.getDesired('edge-3')).toBeUndefined()
      expect(await store.maxSequence()).toBe(2)
    })
  })
})
