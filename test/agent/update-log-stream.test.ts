/**
 * The live update log's chunks (agent/update-log-stream.ts): bounded in size,
 * contiguous offsets, at most MAX_REPORT_LOG bytes an update with a note on
 * what was dropped, whole lines only, never a split character, and a fresh
 * log (offset 0) for the next update. Flushed by hand here; the timer only
 * bounds how long output waits between steps.
 */
import { describe, expect, it } from 'vitest'
import { type UpdateLogChunk, UpdateLogStream } from '../../agent/update-log-stream.ts'
import { MAX_REPORT_LOG, MAX_UPDATE_LOG_CHUNK, updateLogFrame, utf8Length } from '../../protocol/index.ts'

function stream(): { live: UpdateLogStream; chunks: UpdateLogChunk[]; running: { id: string | null } } {
  const chunks: UpdateLogChunk[] = []
  const running = { id: 'a'.repeat(32) as string | null }
  const live = new UpdateLogStream({
    send: (chunk) => chunks.push(chunk),
    manifestId: () => running.id,
    flushMs: 60_000,
  })
  return { live, chunks, running }
}

/** Every chunk is a valid frame and starts where the one before ended. */
function checkContiguous(chunks: UpdateLogChunk[]): void {
  let next = 0
  for (const c of chunks) {
    expect(updateLogFrame.safeParse({ t: 'update-log', ...c }).success).toBe(true)
    expect(c.offset).toBe(next)
    next += utf8Length(c.text)
  }
}

describe('UpdateLogStream', () => {
  it('sends what waits when flushed, and a line of its own on a new line', () => {
    const { live, chunks } = stream()
    live.write('partial')
    expect(chunks).toEqual([])
    live.line('$ ./health')
    live.flush()
    expect(chunks.map((c) => c.text)).toEqual(['partial\n$ ./health\n'])
    live.write('more\n')
    live.flush(true)
    checkContiguous(chunks)
  })

  it('sends at once when a chunk is full, in chunks of at most MAX_UPDATE_LOG_CHUNK bytes', () => {
    const { live, chunks } = stream()
    live.write(`${'ü'.repeat(5000)}\n`)
    expect(chunks.length).toBeGreaterThanOrEqual(2)
    for (const c of chunks) expect(utf8Length(c.text)).toBeLessThanOrEqual(MAX_UPDATE_LOG_CHUNK)
    expect(chunks.map((c) => c.text).join('')).toBe(`${'ü'.repeat(5000)}\n`)
    checkContiguous(chunks)
  })

  it('keeps an update within MAX_REPORT_LOG bytes: whole lines, then a note on the bytes dropped', () => {
    const { live, chunks } = stream()
    const line = `${'x'.repeat(99)}\n`
    for (let i = 0; i < 300; i++) live.write(line)
    live.flush(true)
    checkContiguous(chunks)
    const text = chunks.map((c) => c.text).join('')
    const note = /\[… (\d+) bytes dropped\]\n$/.exec(text)
    expect(note).not.toBeNull()
    const kept = text.slice(0, note?.index)
    expect(utf8Length(text)).toBeLessThanOrEqual(MAX_REPORT_LOG)
    expect(
      kept
        .split('\n')
        .filter(Boolean)
        .every((l) => `${l}\n` === line),
    ).toBe(true)
    expect(Number(note?.[1])).toBe(300 * line.length - kept.length)
  })

  it('starts a fresh live log for the next update, and writes nothing while none runs', () => {
    const { live, chunks, running } = stream()
    live.write('one\n')
    running.id = 'b'.repeat(32)
    live.write('two\n')
    running.id = null
    live.write('nobody\n')
    live.flush(true)
    expect(chunks).toEqual([
      { manifestId: 'a'.repeat(32), offset: 0, text: 'one\n' },
      { manifestId: 'b'.repeat(32), offset: 0, text: 'two\n' },
    ])
  })
})
