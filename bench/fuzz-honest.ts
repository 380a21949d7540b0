/**
 * The honest path that bench/fuzz.ts keeps running under attack: every few
 * seconds the fleet's admin deploys a fresh small archive to the honest agent
 * with the real `fleetmesh deploy` (upload, sign, roll out, watch until it
 * commits), then `fleetmesh machines --json` must show the machine online and
 * committed on that generation, with a report received after the deploy began.
 */
import { readFile } from 'node:fs/promises'
import { sha256Hex, sleep } from '../lib/index.ts'
import type { MachineView } from '../protocol/index.ts'
import { makeArchive } from '../testkit/archives.ts'
import type { TestFleet } from '../testkit/harness.ts'

export interface HonestDeploy {
  generation: string
  /** Started after the fuzzing began and before it ended */
  during: boolean
  /** The deploy exited 0 and machines showed the agent online, committed on it, freshly reported */
  ok: boolean
  /** Wall time of `fleetmesh deploy`, ms */
  ms: number
  /** The archive's digest: the coordinator holds it as a blob */
  sha256: string
  problem?: string
  /** The end of the deploy's output when it failed */
  output?: string[]
}

const DEPLOY_TIMEOUT = '3m'

export class HonestPath {
  readonly results: HonestDeploy[] = []
  readonly #fleet: TestFleet
  readonly #machine: string
  #n = 0

  constructor(fleet: TestFleet, machine: string) {
    this.#fleet = fleet
    this.#machine = machine
  }

  /** One deploy and check. */
  async deploy(during: boolean): Promise<HonestDeploy> {
    const generation = `honest-${++this.#n}`
    const archive = await makeArchive(this.#fleet.dir, { version: generation })
    const sha256 = sha256Hex(await readFile(archive))
    const started = Date.now()
    const r = await this.#fleet.deploy(archive, this.#machine, generation, ['--timeout', DEPLOY_TIMEOUT])
    const result: HonestDeploy = { generation, during, ok: false, ms: r.ms, sha256 }
    if (r.code !== 0) {
      const output = `${r.stdout}\n${r.stderr}`.trim().split('\n')
      result.problem = `deploy exited ${r.code}: ${output.filter((l) => l.trim() !== '').at(-1)}`
      result.output = output.slice(-30)
    } else {
      const rows = await this.#fleet.json<MachineView[]>(['machines']).catch((err: Error) => err)
      const row = Array.isArray(rows) ? rows.find((m) => m.name === this.#machine) : undefined
      if (row === undefined) result.problem = `machines did not list ${this.#machine}: ${String(rows)}`
      else if (!row.online) result.problem = `${this.#machine} shown offline`
      else if (row.state !== 'committed' || row.currentGeneration !== generation)
        result.problem = `${this.#machine} is ${row.state} on ${row.currentGeneration}, not committed on ${generation}`
      else if ((row.reportedAt ?? 0) < started)
        result.problem = `no report from ${this.#machine} since the deploy began`
      else result.ok = true
    }
    this.results.push(result)
    return result
  }

  /** Deploys every `everyMs` (from the end of one to the start of the next) until `signal` aborts. */
  async run(everyMs: number, signal: AbortSignal, onResult: (r: HonestDeploy) => void): Promise<void> {
    while (!signal.aborted) {
      onResult(await this.deploy(true))
      await sleep(everyMs, signal).catch(() => {})
    }
  }
}
