// Text tables fitted to a width: only the columns marked shrinkable give way,
// widest first and never below their header, cut cells end in "…", and the width
// comes from $COLUMNS, else the terminal, else no limit.
import { describe, expect, it } from 'vitest'
import { shorten, type TableFit, table, terminalWidth } from '../../lib/index.ts'

const headers = ['NAME', 'TAGS', 'CURRENT', 'STATE']
const rows = [
  ['edge-1', 'lab,web,prod,eu-west', 'app-20261123T101500', 'committed'],
  ['edge-2', 'lab', 'app-20261123T101600', 'committed'],
]
const within = (width: number): TableFit => ({ width, shrink: { TAGS: 'end', CURRENT: 'middle' } })
const widest = (text: string) => Math.max(...text.split('\n').map((l) => l.length))

describe('table', () => {
  it('without a fit, or with room to spare, is the plain aligned table', () => {
    const plain = table(headers, rows)
    expect(plain.split('\n')[1]).toBe('edge-1  lab,web,prod,eu-west  app-20261123T101500  committed')
    expect(table(headers, rows, within(200))).toBe(plain)
    expect(table(headers, rows, within(Number.POSITIVE_INFINITY))).toBe(plain)
  })

  it('narrows the widest shrinkable column first, and keeps the others whole', () => {
    const out = table(headers, rows, within(56)).split('\n')
    expect(out.every((l) => l.length <= 56)).toBe(true)
    // 4 too wide: TAGS (20) gives way to CURRENT's 19, then the two take turns, TAGS first
    expect(out[1]).toBe('edge-1  lab,web,prod,eu-…  app-20261…3T101500  committed')
    expect(out[2]).toBe('edge-2  lab                app-20261…3T101600  committed')
  })

  it('cuts an id in the middle, so ids that differ at the end still differ', () => {
    const out = table(headers, rows, within(44)).split('\n')
    expect(widest(out.join('\n'))).toBeLessThanOrEqual(44)
    const current = out.slice(1).map((l) => l.split(/\s+/)[2])
    expect(current[0]).not.toBe(current[1])
    expect(current[0]).toContain('…')
  })

  it('never cuts a column below its header, nor one not marked shrinkable', () => {
    const out = table(headers, rows, within(10)).split('\n')
    expect(out[0]).toBe('NAME    TAGS   CURRENT  STATE')
    expect(out[1]?.startsWith('edge-1  lab,…  app…500  committed')).toBe(true)
  })
})

describe('shorten', () => {
  it('keeps text that fits, else cuts at the end or in the middle with an ellipsis', () => {
    expect(shorten('abc', 3)).toBe('abc')
    expect(shorten('abcdefgh', 5)).toBe('abcd…')
    expect(shorten('abcdefgh', 5, 'middle')).toBe('ab…gh')
    expect(shorten('abcdefgh', 6, 'middle')).toBe('abc…gh')
    expect(shorten('abcdefgh', 1)).toBe('…')
  })
})

describe('terminalWidth', () => {
  it('is $COLUMNS when set, else the terminal width, else no limit', () => {
    expect(terminalWidth({ COLUMNS: '80' }, { isTTY: true, columns: 120 })).toBe(80)
    expect(terminalWidth({}, { isTTY: true, columns: 120 })).toBe(120)
    expect(terminalWidth({ COLUMNS: 'wide' }, { isTTY: true, columns: 120 })).toBe(120)
    expect(terminalWidth({}, { isTTY: false, columns: 120 })).toBe(Number.POSITIVE_INFINITY)
    expect(terminalWidth({ COLUMNS: '0' }, {})).toBe(Number.POSITIVE_INFINITY)
  })
})
