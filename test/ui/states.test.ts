/**
 * The dashboard is plain browser JavaScript and cannot import the protocol's
 * TypeScript, so it keeps its own list of update states (in the order the
 * table sorts them: trouble first). A state added to the protocol but not to
 * the page would sort as unknown and never count in the summary: this test
 * ties the two lists together. (dom.js touches `window` when loaded, so its
 * array literals are read from the source.)
 */
import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { UPDATE_STATES } from '../../protocol/index.ts'

const source = await readFile(new URL('../../admin/ui/static/dom.js', import.meta.url), 'utf8')

/** The quoted strings of the array literal that follows `prefix` in dom.js. */
function listAfter(prefix: string): string[] {
  const start = source.indexOf(prefix)
  if (start < 0) throw new Error(`dom.js has no "${prefix}"`)
  const literal = source.slice(start + prefix.length, source.indexOf(']', start))
  return [...literal.matchAll(/'([^']*)'/g)].map((m) => m[1] ?? '')
}

describe("the dashboard's update states", () => {
  it('name every protocol state exactly once, and nothing else', () => {
    expect(listAfter('export const STATES = [').sort()).toEqual([...UPDATE_STATES].sort())
  })
  it('count only protocol states as busy', () => {
    const busy = listAfter('export const BUSY = new Set([')
    expect(busy.length).toBeGreaterThan(0)
    for (const s of busy) expect(UPDATE_STATES).toContain(s)
  })
})
