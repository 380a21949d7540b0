import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { PrivateKey } from '../../keys/index.ts'
import { parseShare, type WavePolicy } from '../../protocol/index.ts'
import { RolloutSim } from '../../testkit/rollout-sim.ts'
import { describeStores } from '../../testkit/stores.ts'

const policy = (waves: string[], extra: Partial<WavePolicy> = {}): WavePolicy => ({
  waves: waves.map((w) => parseShare(w) ?? { count: 0 }),
  maxFailures: { count: 0 },
  soakMs: 0,
  onFailure: 'halt',
  canaryTag: null,
  offlineTimeoutMs: 60_000,
  ...extra,
})

let sim: RolloutSim
afterEach(async () => sim?.close())

describeStores((kind) => {
  describe('rollout engine', () => {
    it('sets desired wave by wave, each after the previous settled', async () => {
      sim = await RolloutSim.open({ store: kind.open, machines: 6 })
      const r = await sim.start(policy(['1', '50%', '100%']))
      expect(r.plan.map((w) => w.length)).toEqual([1, 2, 3])
      const desired = async () =>
        (await Promise.all(sim.names.map((n) => sim.store.getDesired(n)))).filter(
          (d) => d?.id === r.manifestId,
        ).length
      expect(await desired()).toBe(1)
      await sim.report(r, r.plan[0] ?? [], 'committed')
      await sim.until(r.id, (x) => x.wave === 1)
      expect(await desired()).toBe(3)
      await sim.report(r, r.plan[1] ?? [], 'committed')
      await sim.until(r.id, (x) => x.wave === 2)
      await sim.report(r, r.plan[2] ?? [], 'committed')
      const done = await sim.until(r.id, (x) => x.state === 'done')
      expect((await sim.engine.view(done)).counts.done).toBe(6)
    })

    it('halts when the canary fails: nothing beyond the canary gets the release, and it is audited', async () => {
      sim = await RolloutSim.open({ store: kind.open, machines: 5 })
      const r = await sim.start(policy(['1', '100%']))
      await sim.report(r, r.plan[0] ?? [], 'rolled-back')
      const halted = await sim.until(r.id, (x) => x.state === 'halted')
      expect(halted.reason).toMatch(/1 of 1 machine\(s\) of wave 1 failed/)
      for (const name of r.plan[1] ?? []) expect(await sim.store.getDesired(name)).toBeUndefined()
      expect(sim.audits.join('\n')).toMatch(/rollout-halt: rollout .* halted/)
    })

    it('with rollback sends the held previous-generation manifest to the machines that took the release', async () => {
      sim = await RolloutSim.open({ store: kind.open, machines: 4 })
      const r = await sim.start(policy(['2', '100%'], { maxFailures: { count: 0 }, onFailure: 'rollback' }), [
        { machines: sim.names },
      ])
      const [a, b] = r.plan[0] ?? []
      await sim.report(r, [a as string], 'committed')
      await sim.report(r, [b as string], 'failed')
      const halted = await sim.until(r.id, (x) => x.state === 'halted')
      expect(halted.rolledBack).toBe(true)
      const rollbackId = halted.rollbacks[0]?.manifestId
      expect((await sim.store.getDesired(a as string))?.id).toBe(rollbackId)
      for (const name of r.plan[1] ?? []) expect(await sim.store.getDesired(name)).toBeUndefined()
    })

    it('pauses, resumes, and resumes after a restart where it was', async () => {
      sim = await RolloutSim.open({ store: kind.open, machines: 4 })
      const r = await sim.start(policy(['1', '100%']))
      await sim.engine.control(r.id, 'pause', 'test')
      await sim.report(r, r.plan[0] ?? [], 'committed')
      // the reports queued an evaluation: wait for it, so a pause that did nothing shows here
      await sim.engine.idle(r.id)
      expect((await sim.store.rollouts.get(r.id))?.wave).toBe(0)
      await sim.engine.stop()
      sim.restart()
      await sim.engine.start()
      await sim.engine.control(r.id, 'resume', 'test')
      await sim.until(r.id, (x) => x.wave === 1)
    })

    it('counts a machine offline past the timeout as skipped and moves on', async () => {
      sim = await RolloutSim.open({ store: kind.open, machines: 3, offline: (n) => n === 'm-00001' })
      const r = await sim.start(policy(['100%'], { offlineTimeoutMs: 50 }))
      await sim.report(
        r,
        sim.names.filter((n) => n !== 'm-00001'),
        'committed',
      )
      const done = await sim.until(r.id, (x) => x.state === 'done')
      expect((await sim.engine.view(done)).counts.skipped).toBe(1)
      // It keeps the release as desired state, so it gets it when it returns.
      expect((await sim.store.getDesired('m-00001'))?.id).toBe(r.manifestId)
    })

    it('a machine enrolling during the rollout does not inherit its release until it is done', async () => {
      sim = await RolloutSim.open({ store: kind.open, machines: 2 })
      const enroll = (name: string) => {
        const key = PrivateKey.generate()
        const peerId = key.toPeerId().toString()
        const publicKey = key.publicKey.toString()
        const nonce = randomBytes(16).toString('hex')
        return sim.store.enrollMachine({
          name,
          peerId,
          publicKey,
          tags: ['sim'],
          facts: {},
          nonce,
          at: Date.now(),
        })
      }
      const r = await sim.start(policy(['1', '100%']))
      await enroll('late-1')
      expect(await sim.store.getDesired('late-1')).toBeUndefined()
      await sim.report(r, r.plan[0] ?? [], 'committed')
      await sim.until(r.id, (x) => x.wave === 1)
      await sim.report(r, r.plan[1] ?? [], 'committed')
      await sim.until(r.id, (x) => x.state === 'done')
      await enroll('late-2')
      expect((await sim.store.getDesired('late-2'))?.id).toBe(r.manifestId)
    })
  })
})
