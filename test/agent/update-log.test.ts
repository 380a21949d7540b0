/**
 * The update log's bounds, and update.json files written before update logs
 * (and activation modes) existed, which must still load. The log in reports is
 * covered in updater.test.ts and nixos-activator.test.ts.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { UpdateJournal } from '../../agent/update-journal.ts'
import { appendLog } from '../../agent/update-reports.ts'
import { MAX_REPORT_LOG } from '../../protocol/messages.ts'
import { removeDir, tempDir } from './fixtures.ts'

describe('appendLog', () => {
  it('adds lines and keeps the tail within the report limit', () => {
    expect(appendLog(undefined, 'a\n')).toBe('a')
    expect(appendLog('a', undefined)).toBe('a')
    expect(appendLog('a', '')).toBe('a')
    expect(appendLog('a', 'b')).toBe('a\nb')
    const long = appendLog('x'.repeat(MAX_REPORT_LOG), 'the end') as string
    expect(long).toHaveLength(MAX_REPORT_LOG)
    expect(long.startsWith('…')).toBe(true)
    expect(long.endsWith('\nthe end')).toBe(true)
  })
})

describe('update.json from before update logs', () => {
  it('loads a record with no log, no rebootRequired and generations with no activation mode', async () => {
    const dir = await tempDir()
    try {
      const generation = {
        id: '1-web-1',
        name: 'web-1',
        path: '/x/generations/1-web-1',
        manifestId: 'a'.repeat(32),
      }
      const update = {
        manifestId: 'b'.repeat(32),
        sequence: 2,
        rolloutId: 'c'.repeat(32),
        generation: 'web-2',
        envelope: '',
        step: 'committed',
        attempt: 1,
        artifact: null,
        target: { ...generation, id: '2-web-2' },
        previous: generation,
        startedAt: 1,
        updatedAt: 2,
        error: null,
      }
      await writeFile(
        join(dir, 'update.json'),
        JSON.stringify({ v: 1, lastSequence: 2, recentIds: [update.manifestId], update }),
      )
      const journal = await UpdateJournal.open(dir, () => undefined)
      expect(journal.update?.previous).toEqual(generation)
      expect(journal.update?.log).toBeUndefined()
    } finally {
      await removeDir(dir)
    }
  })
})
