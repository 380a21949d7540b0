/**
 * Rollouts in waves without agents: a real SQLite store with simulated
 * machines, the real rollout engine, and reports recorded and announced the way
 * the control service does. For engine tests and the rollout benchmark.
 */

import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FleetEvents } from '../coordinator/events.ts'
import { RolloutEngine } from '../coordinator/rollout-engine.ts'
import { openSqliteStore } from '../coordinator/sqlite-store.ts'
import type { FleetStore, NewManifest, RolloutRecord } from '../coordinator/store.ts'
import { PrivateKey } from '../keys/index.ts'
import { planWaves, type UpdateState, type WavePolicy } from '../protocol/index.ts'
import { sampleManifest, sampleStatus } from './fixtures.ts'
import { manifestRecord } from './manifest-record.ts'

const admin = PrivateKey.generate()

export interface RolloutSimOptions {
  machines: number
  /** Defaults to in-memory; a file makes every commit pay its fsync, as in production. */
  onDisk?: boolean
  /** Opens the store to run on instead of SQLite (a kind of testkit/stores.ts); the sim closes it. */
  store?: () => Promise<FleetStore>
  offline?: (name: string) => boolean
}

export class RolloutSim {
  readonly events = new FleetEvents()
  /** Every push the engine asked for, with when it happened (performance.now()). */
  readonly pushes: { machines: readonly string[]; at: number }[] = []
  readonly audits: string[] = []
  readonly names: string[]
  engine!: RolloutEngine
  #seq = new Map<string, number>()
  #sequence = 0
  #dir: string | undefined
  #onPush: (() => void) | undefined

  readonly store: FleetStore
  readonly options: RolloutSimOptions

  /** Use RolloutSim.open. */
  constructor(store: FleetStore, names: string[], options: RolloutSimOptions) {
    this.store = store
    this.names = names
    this.options = options
  }

  static async open(options: RolloutSimOptions): Promise<RolloutSim> {
    const dir = options.onDisk ? await mkdtemp(join(tmpdir(), 'fm-rollout-')) : undefined
    const store =
      options.store === undefined
        ? await openSqliteStore(dir === undefined ? ':memory:' : join(dir, 'coordinator.db'))
        : await options.store()
    const names = Array.from({ length: options.machines }, (_, i) => `m-${String(i).padStart(5, '0')}`)
    for (const name of names) {
      const key = PrivateKey.generate()
      await store.enrollMachine({
        name,
        peerId: key.toPeerId().toString(),
        publicKey: key.publicKey.toString(),
        tags: ['sim'],
        facts: {},
        nonce: randomBytes(16).toString('hex'),
        at: Date.now(),
      })
    }
    const sim = new RolloutSim(store, names, options)
    sim.#dir = dir
    await sim.restart().start()
    return sim
  }

  /** A fresh engine on the same store (what a coordinator restart does); not yet started. */
  restart(): RolloutEngine {
    this.engine = new RolloutEngine({
      store: this.store,
      events: this.events,
      push: async (machines) => {
        this.pushes.push({ machines, at: performance.now() })
        this.#onPush?.()
      },
      online: (name) => !(this.options.offline?.(name) ?? false),
      audit: async (action, detail) => {
        this.audits.push(`${action}: ${detail}`)
      },
      log: (msg) => process.env.SIM_LOG && console.log(msg),
    })
    return this.engine
  }

  manifest(rolloutId?: string): NewManifest {
    const sequence = ++this.#sequence
    const m = sampleManifest({ sequence, targets: { machines: [], tags: ['sim'] } })
    return manifestRecord(m, admin, {
      rolloutId: rolloutId ?? m.rolloutId,
      generation: `gen-${sequence}`,
      submittedAt: Date.now(),
      expiresAt: Date.now() + 86_400_000,
    })
  }

  /** Starts a rollout of a fresh release to every machine. */
  async start(policy: WavePolicy, rollbacks: { machines: string[] }[] = []): Promise<RolloutRecord> {
    const release = this.manifest()
    const plan = planWaves(
      this.names.map((name) => ({ name, tags: [] })),
      policy,
    )
    return this.engine.create({
      release,
      rollbacks: rollbacks.map((r) => ({ manifest: this.manifest(), machines: r.machines })),
      policy,
      plan,
      at: Date.now(),
    })
  }

  /** Records machines' reports about the rollout and announces them, as the control service does. */
  async report(r: RolloutRecord, machines: readonly string[], state: UpdateState): Promise<void> {
    const records = machines.map((machine) => {
      const seq = (this.#seq.get(machine) ?? 0) + 1
      this.#seq.set(machine, seq)
      const report = sampleStatus({ machine, seq, state, manifestId: r.manifestId, rolloutId: r.id })
      return { machine, seq, report, envelope: new Uint8Array(randomBytes(64)), receivedAt: Date.now() }
    })
    await this.store.recordStatuses(records)
    for (const status of records) this.events.emit({ type: 'status', machine: status.machine, status })
  }

  /** Resolves at the next push the engine makes. */
  nextPush(): Promise<void> {
    return new Promise((resolve) => {
      this.#onPush = () => {
        this.#onPush = undefined
        resolve()
      }
    })
  }

  /** Resolves once the rollout satisfies `done`, re-checking after each engine change. */
  async until(id: string, done: (r: RolloutRecord) => boolean): Promise<RolloutRecord> {
    return new Promise((resolve) => {
      const check = async () => {
        const r = await this.store.rollouts.get(id)
        if (r !== undefined && done(r)) {
          off()
          resolve(r)
        }
      }
      const off = this.engine.onChange(() => void check())
      void check()
    })
  }

  async close(): Promise<void> {
    await this.engine.stop()
    await this.store.close()
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true })
  }
}
