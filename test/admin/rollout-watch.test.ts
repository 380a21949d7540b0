// How a rollout watch ends, against scripted coordinators: a finished rollout
// ends with its first snapshot; machines a newer rollout takes over are
// superseded (exit 3) and named with that rollout, never an empty list; a rollout
// no machine has ends at once (exit 4); after a submit lost mid-way the watch
// finds out whether the rollout was stored. And a coordinator lost before the
// submit is reported as nothing deployed.
import { describe, expect, it } from 'vitest'
import { AdminRequestError } from '../../admin/client.ts'
import { beforeSubmit, CoordinatorLostError } from '../../admin/commands/rollout.ts'
import { watchRollout } from '../../admin/commands/watch.ts'
import { EXIT } from '../../admin/rollout-outcome.ts'
import type { MachineView } from '../../protocol/index.ts'
import { sampleMachineView } from '../../testkit/fixtures.ts'
import { captureOutput, scriptedWatch } from '../../testkit/scripted-watch.ts'

const X = 'a'.repeat(32)
const Y = 'b'.repeat(32)

class LinkClosed extends Error {
  override name = 'UnexpectedEndOfStreamError'
}

const machine = (name: string, over: Partial<MachineView>): MachineView =>
  sampleMachineView({ name, rolloutId: X, desiredRolloutId: X, state: 'committed', ...over })

const { out, err } = captureOutput()

describe('watch --rollout', () => {
  it('of a finished rollout ends with the first snapshot', async () => {
    const client = scriptedWatch([
      {
        type: 'snapshot',
        machines: [
          machine('edge-1', {}),
          machine('edge-2', { state: 'refused', error: { code: 'expired', message: 'x' } }),
        ],
      },
    ])
    expect(await watchRollout(client, X, [], 60_000, false)).toBe(EXIT.notCommitted)
    expect(out.join('')).toContain(`rollout ${X} settled: 1 committed, 1 not committed`)
    expect(out.join('')).toContain('not committed: edge-2 (refused)')
  })

  it('names the machines a newer rollout took over, before or after they finished', async () => {
    const pending = machine('edge-2', { rolloutId: null, state: 'idle' })
    const client = scriptedWatch([
      { type: 'manifest', manifestId: 'c'.repeat(32), rolloutId: X, machines: ['edge-1', 'edge-2'] },
      { type: 'snapshot', machines: [machine('edge-1', {}), pending] },
      { type: 'manifest', manifestId: 'd'.repeat(32), rolloutId: Y, machines: ['edge-1', 'edge-2'] },
    ])
    expect(await watchRollout(client, X, [], 60_000, false)).toBe(EXIT.superseded)
    const text = out.join('')
    expect(text).toContain('1 committed, 0 not committed, 1 superseded before finishing')
    expect(text).toContain(`superseded by rollout ${Y}: edge-1 (committed first), edge-2 (unfinished)`)
  })

  it('of a rollout every machine has moved on from ends at once, naming them', async () => {
    const client = scriptedWatch([
      {
        type: 'manifest',
        manifestId: 'c'.repeat(32),
        rolloutId: X,
        machines: ['edge-1'],
      },
      { type: 'snapshot', machines: [machine('edge-1', { rolloutId: Y, desiredRolloutId: Y })] },
    ])
    expect(await watchRollout(client, X, [], 60_000, true)).toBe(EXIT.superseded)
    const settled = JSON.parse(out.at(-1) ?? '{}')
    expect(settled).toMatchObject({
      type: 'settled',
      superseded: [{ machine: 'edge-1', by: Y, finished: null }],
    })
  })

  it('of a rollout no machine has ends at once', async () => {
    const client = scriptedWatch([
      { type: 'snapshot', machines: [machine('edge-1', { rolloutId: Y, desiredRolloutId: Y })] },
    ])
    expect(await watchRollout(client, X, [], 60_000, false)).toBe(EXIT.noMachines)
    expect(out.join('')).toContain('no machine you can see is part of it')
  })

  it('that times out lists what is still pending, never an empty list', async () => {
    const client = scriptedWatch([
      { type: 'snapshot', machines: [machine('edge-1', { rolloutId: null, state: null })] },
    ])
    expect(await watchRollout(client, X, [], 200, false)).toBe(EXIT.timedOut)
    expect(out.join('')).toMatch(/still pending: edge-1; the rollout goes on/)
  })
})

describe('deploy after losing the coordinator during the submit', () => {
  const lost = new LinkClosed('stream ended')

  it('says nothing was deployed when the coordinator, back, has no such rollout', async () => {
    const client = scriptedWatch([
      { type: 'snapshot', machines: [machine('edge-1', { rolloutId: Y, desiredRolloutId: Y })] },
    ])
    const code = await watchRollout(client, X, [], 60_000, false, { standing: 'unconfirmed', lost })
    expect(code).toBe(EXIT.noMachines)
    expect(err.join('')).toContain(
      `while rollout ${X} was being submitted; reconnecting to see whether it was stored`,
    )
    expect(out.join('')).toContain('nothing was deployed; run the same deploy again')
  })

  it('follows the rollout when the coordinator had stored it', async () => {
    const client = scriptedWatch([
      { type: 'manifest', manifestId: 'c'.repeat(32), rolloutId: X, machines: ['edge-1'] },
      { type: 'snapshot', machines: [machine('edge-1', {})] },
    ])
    const code = await watchRollout(client, X, [], 60_000, false, { standing: 'unconfirmed', lost })
    expect(code).toBe(EXIT.committed)
    expect(err.join('')).toContain(`rollout ${X} is stored on the coordinator and goes on`)
  })
})

describe('deploy losing the coordinator before the submit', () => {
  it('says nothing was deployed; a refusal stays what it is', async () => {
    const upload = beforeSubmit(() => Promise.reject(new LinkClosed('stream ended before a frame arrived')))
    await expect(upload).rejects.toBeInstanceOf(CoordinatorLostError)
    await expect(upload).rejects.toThrow(
      /the connection closed\): nothing was deployed\. Run the same deploy again/,
    )
    const refused = new AdminRequestError('denied', 'no deploy capability')
    await expect(beforeSubmit(() => Promise.reject(refused))).rejects.toBe(refused)
  })
})
