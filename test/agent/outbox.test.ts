import { readdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Outbox, reportKind } from '../../agent/outbox.ts'
import { removeDir, tempDir } from './fixtures.ts'

const bytes = (text: string) => new TextEncoder().encode(text)
const text = (b: Uint8Array) => new TextDecoder().decode(b)

describe('outbox', () => {
  let dir: string
  beforeEach(async () => {
    dir = await tempDir()
  })
  afterEach(() => removeDir(dir))

  it('queues in seq order, acks cumulatively and survives a restart', async () => {
    const outbox = await Outbox.open(dir)
    const seqs: number[] = []
    for (const name of ['a', 'b', 'c', 'd']) {
      const seq = await outbox.nextSeq()
      seqs.push(seq)
      await outbox.enqueue(seq, bytes(name))
    }
    expect(seqs).toEqual([1, 2, 3, 4])
    expect(await outbox.ack(2)).toBe(2)
    expect((await outbox.pending()).map((p) => [p.seq, text(p.envelope)])).toEqual([
      [3, 'c'],
      [4, 'd'],
    ])

    const reopened = await Outbox.open(dir)
    expect((await reopened.pending()).map((p) => p.seq)).toEqual([3, 4])
    expect(await reopened.nextSeq()).toBe(5)
    await reopened.ack(4)
    expect(await reopened.pending()).toEqual([])

    // A seq reserved but never enqueued is not handed out again either.
    const again = await Outbox.open(dir)
    expect(await again.nextSeq()).toBe(6)
    expect(await readdir(join(dir, 'outbox'))).toEqual(['next-seq.json'])
  })

  it('never reuses a seq even if the counter file is lost', async () => {
    const outbox = await Outbox.open(dir)
    for (let i = 0; i < 3; i++) await outbox.enqueue(await outbox.nextSeq(), bytes(`r${i}`))
    await unlink(join(dir, 'outbox', 'next-seq.json'))
    const reopened = await Outbox.open(dir)
    expect(await reopened.nextSeq()).toBe(4)
  })

  it('when full, drops the oldest progress reports first and never terminal ones', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 4 })
    await outbox.enqueue(1, bytes('downloading'), 'transition')
    await outbox.enqueue(2, bytes('p1'), 'progress')
    await outbox.enqueue(3, bytes('p2'), 'progress')
    await outbox.enqueue(4, bytes('committed'), 'terminal')
    expect(await outbox.enqueue(5, bytes('p3'), 'progress')).toEqual([2])
    expect(await outbox.enqueue(6, bytes('refused'), 'terminal')).toEqual([3])
    expect(await outbox.enqueue(7, bytes('failed'), 'terminal')).toEqual([5])
    expect(await outbox.enqueue(8, bytes('rolled-back'), 'terminal')).toEqual([1])
    // Only terminal reports left: they are kept beyond the bound.
    expect(await outbox.enqueue(9, bytes('committed'), 'terminal')).toEqual([])
    const left = await (await Outbox.open(dir, { maxEntries: 4 })).pending()
    expect(left.map((p) => text(p.envelope))).toEqual([
      'committed',
      'refused',
      'failed',
      'rolled-back',
      'committed',
    ])
  })

  it('classifies reports', () => {
    expect(reportKind({ state: 'committed', progress: null })).toBe('terminal')
    expect(reportKind({ state: 'downloading', progress: { done: 1, total: 2 } })).toBe('progress')
    expect(reportKind({ state: 'activating', progress: null })).toBe('transition')
  })
})
