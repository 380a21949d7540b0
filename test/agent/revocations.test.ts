// The agent's copy of the revocation list (agent/revocations.ts): it takes from
// the coordinator only entries that extend its own, keeps its own list when the
// coordinator's forks or falls behind (and says so loudly), survives a restart,
// and holds back activation until it has heard the coordinator's list once.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AgentRevocations } from '../../agent/revocations.ts'
import type { ErrorInfo } from '../../protocol/index.ts'
import { EMPTY_HEAD, RevocationChain } from '../../protocol/index.ts'
import { hex } from '../../testkit/fixtures.ts'
import { revocationFleet } from '../protocol/revocation-fixtures.ts'
import { removeDir, tempDir } from './fixtures.ts'

const fleet = revocationFleet()

let dir: string
let problems: ErrorInfo[]
let changes: number
beforeEach(async () => {
  dir = await tempDir()
  problems = []
  changes = 0
})
afterEach(() => removeDir(dir))

const open = () =>
  AgentRevocations.open(dir, fleet.policy, {
    onProblem: (e) => problems.push(e),
    onChange: () => {
      changes++
    },
  })

/** The coordinator's list: `n` entries. */
function coordinatorList(n: number): RevocationChain {
  const list = new RevocationChain(fleet.policy)
  for (let i = 0; i < n; i++) list.append(fleet.entry(list.head, hex(16)))
  return list
}
const envelopes = (list: RevocationChain, after = 0) => list.after(after).map((e) => e.envelope)

describe('the agent revocation list', () => {
  it('takes the entries the coordinator sends after its hello, stores them and keeps them across a restart', async () => {
    const coordinator = coordinatorList(3)
    const agent = await open()
    expect(await agent.hello(coordinator.head)).toEqual([])
    expect(agent.synced).toBe(false)
    const synced = agent.whenSynced(AbortSignal.timeout(5000))
    await agent.receive(envelopes(coordinator))
    expect(agent.head()).toEqual(coordinator.head)
    expect(changes).toBe(1)
    await synced
    expect(problems).toEqual([])
    const again = await open()
    expect(again.head()).toEqual(coordinator.head)
    expect(again.view.revoked).toEqual(coordinator.revoked)
  })

  it('refuses a forked list: reports it and keeps its own, on disk too', async () => {
    const ours = coordinatorList(2)
    const agent = await open()
    await agent.hello(ours.head)
    await agent.receive(envelopes(ours))
    const stored = await readFile(join(dir, 'revocations.json'), 'utf8')
    // the coordinator now shows another second entry, and a third on top of it
    const forked = RevocationChain.from(fleet.policy, envelopes(ours).slice(0, 1))
    forked.append(fleet.entry(forked.head, hex(16)))
    forked.append(fleet.entry(forked.head, hex(16)))
    expect(await agent.hello(forked.head)).toEqual([])
    await agent.receive(envelopes(forked, 2))
    expect(problems.map((p) => p.code)).toEqual(['revocations-fork'])
    expect(agent.head()).toEqual(ours.head)
    // and at a position it holds
    await agent.hello({ seq: 2, hash: forked.hashAt(2) as string })
    await agent.receive(envelopes(forked, 1))
    expect(problems.map((p) => p.code)).toEqual(['revocations-fork', 'revocations-fork', 'revocations-fork'])
    expect(agent.head()).toEqual(ours.head)
    expect(await readFile(join(dir, 'revocations.json'), 'utf8')).toBe(stored)
    expect((await open()).head()).toEqual(ours.head)
  })

  it('refuses a rolled-back list: reports it, keeps its own and gives the missing entries back', async () => {
    const ours = coordinatorList(3)
    const agent = await open()
    await agent.hello(ours.head)
    await agent.receive(envelopes(ours))
    // a coordinator restored from an older backup: its list ends at entry 1
    const giveBack = await agent.hello({ seq: 1, hash: ours.hashAt(1) as string })
    expect(problems.map((p) => p.code)).toEqual(['revocations-rollback'])
    expect(giveBack).toEqual([envelopes(ours, 1)])
    expect(agent.head()).toEqual(ours.head)
    // an empty list from the coordinator is a rollback too
    await agent.hello(EMPTY_HEAD)
    expect(problems.map((p) => p.code)).toEqual(['revocations-rollback', 'revocations-rollback'])
    expect(agent.head()).toEqual(ours.head)
  })

  it('does not count as synced while entries the coordinator announced are missing', async () => {
    const coordinator = coordinatorList(2)
    const agent = await open()
    await agent.hello(coordinator.head)
    await agent.receive(envelopes(coordinator).slice(0, 1))
    expect(agent.synced).toBe(false)
    await agent.receive(envelopes(coordinator, 1))
    expect(agent.synced).toBe(true)
  })

  it('takes no entry from another fleet or a signer without the admin capability', async () => {
    const agent = await open()
    const other = revocationFleet()
    await agent.hello({ seq: 1, hash: hex(32) })
    await agent.receive([other.entry(EMPTY_HEAD, hex(16))])
    const deployer = fleet.signer({ caps: ['deploy'] })
    await agent.receive([fleet.entry(EMPTY_HEAD, hex(16), { by: deployer })])
    expect(problems.map((p) => p.code)).toEqual(['revocations-refused', 'revocations-refused'])
    expect(agent.head()).toEqual(EMPTY_HEAD)
  })

  it('stops on a damaged file, naming it and saying what moving it aside does', async () => {
    await writeFile(join(dir, 'revocations.json'), '{"v":1,"entries":["AAAA"]}\n')
    await expect(open()).rejects.toThrow(/revocations\.json is damaged .*Moving it aside/)
  })
})
