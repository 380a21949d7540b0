/**
 * lib/json-locate.ts: the line and column of a JSON path, for errors found
 * after parsing (schema checks, unknown references) that must name the line.
 */
import { describe, expect, it } from 'vitest'
import { formatJsonPath, JsonLocator, locateJson } from '../../lib/index.ts'

const TEXT = `{
  "fleet": "acme",
  "groups": { "edge": ["lab", "eu"] },
  "machines": {
    "edge-1": {
      "tags": [
        "lab",
        "x \\" y"
      ],
      "meta": {"site": "berlin", "n": -1.5e3, "ok": true, "none": null}
    },
    "weird\\"key": {}
  }
}`

/** Where `needle` (unique in TEXT) starts, counted independently of the scanner. */
function at(needle: string, text = TEXT): { line: number; column: number } {
  const index = text.indexOf(needle)
  expect(text.indexOf(needle, index + 1)).toBe(-1)
  const before = text.slice(0, index).split('\n')
  return { line: before.length, column: (before.at(-1) ?? '').length + 1 }
}

describe('locateJson', () => {
  it('finds object members by their key', () => {
    const index = new JsonLocator(TEXT)
    expect(index.locate(['fleet'])).toEqual({ line: 2, column: 3 })
    expect(index.locate(['machines', 'edge-1'])).toEqual({ line: 5, column: 5 })
    expect(index.locate(['machines', 'edge-1', 'meta', 'ok'])).toEqual(at('"ok"'))
    expect(index.locate(['machines', 'edge-1', 'meta', 'none'])).toEqual(at('"none"'))
    expect(index.locate(['machines', 'weird"key'])).toEqual({ line: 12, column: 5 })
  })

  it('finds array elements by their value, escapes and one-line arrays included', () => {
    expect(locateJson(TEXT, ['machines', 'edge-1', 'tags', 1])).toEqual({ line: 8, column: 9 })
    expect(locateJson(TEXT, ['groups', 'edge', 1])).toEqual(at('"eu"'))
  })

  it('falls back to the nearest enclosing path for a member that is missing', () => {
    expect(locateJson(TEXT, ['machines', 'edge-1', 'channel'])).toEqual({ line: 5, column: 5 })
    expect(locateJson(TEXT, ['nothing'])).toEqual({ line: 1, column: 1 })
    expect(locateJson(TEXT, [])).toEqual({ line: 1, column: 1 })
  })

  it('handles empty containers, a BOM and CRLF line ends', () => {
    const text = '\uFEFF{"a": {}, "b": [],\r\n "c": [[], {"d": 1}]}'
    const index = new JsonLocator(text)
    expect(index.locate(['b'])).toEqual({ line: 1, column: 11 })
    expect(index.locate(['c', 1, 'd'])).toEqual({ line: 2, column: 13 })
  })
})

describe('formatJsonPath', () => {
  it('writes paths as the operator reads them', () => {
    expect(formatJsonPath(['machines', 'edge-1', 'tags', 2])).toBe('machines.edge-1.tags[2]')
    expect(formatJsonPath(['meta', 'a b'])).toBe('meta["a b"]')
  })
})
