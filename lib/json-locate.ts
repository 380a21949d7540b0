/**
 * Where a value sits in a JSON text: the line and column of the member or
 * element a path names, so an error found after parsing (a schema check, an
 * unknown reference) can point at the line the operator must fix, as JSON
 * syntax errors already do. JSON.parse keeps no positions, so this scans the
 * text once more; it expects text that JSON.parse accepted.
 */

/** 1-based, as editors count. */
export interface JsonPosition {
  line: number
  column: number
}

export type JsonPath = readonly (string | number)[]

const WHITESPACE = new Set([' ', '\t', '\n', '\r'])

/** The positions of every member key and array element of `text`, by path. */
class Scanner {
  readonly positions = new Map<string, JsonPosition>()
  #i = 0
  #line = 1
  #lineStart = 0
  readonly #text: string

  constructor(text: string) {
    this.#text = text
  }

  #here(): JsonPosition {
    return { line: this.#line, column: this.#i - this.#lineStart + 1 }
  }

  #skip(): void {
    while (this.#i < this.#text.length && WHITESPACE.has(this.#text.charAt(this.#i))) {
      if (this.#text.charAt(this.#i) === '\n') {
        this.#line++
        this.#lineStart = this.#i + 1
      }
      this.#i++
    }
  }

  /** Reads a string literal at the cursor and returns its decoded value. */
  #string(): string {
    const start = this.#i
    this.#i++
    while (this.#i < this.#text.length && this.#text.charAt(this.#i) !== '"')
      this.#i += this.#text.charAt(this.#i) === '\\' ? 2 : 1
    this.#i++
    return JSON.parse(this.#text.slice(start, this.#i)) as string
  }

  value(path: (string | number)[]): void {
    this.#skip()
    const c = this.#text.charAt(this.#i)
    if (c === '{') {
      this.#i++
      this.#skip()
      if (this.#text.charAt(this.#i) === '}') {
        this.#i++
        return
      }
      for (;;) {
        this.#skip()
        const at = this.#here()
        const key = this.#string()
        this.positions.set(JSON.stringify([...path, key]), at)
        this.#skip()
        this.#i++ // ':'
        this.value([...path, key])
        this.#skip()
        if (this.#text.charAt(this.#i++) !== ',') return
      }
    }
    if (c === '[') {
      this.#i++
      this.#skip()
      if (this.#text.charAt(this.#i) === ']') {
        this.#i++
        return
      }
      for (let index = 0; ; index++) {
        this.#skip()
        this.positions.set(JSON.stringify([...path, index]), this.#here())
        this.value([...path, index])
        this.#skip()
        if (this.#text.charAt(this.#i++) !== ',') return
      }
    }
    if (c === '"') {
      this.#string()
      return
    }
    // a number, true, false or null: up to the next delimiter
    while (this.#i < this.#text.length && !/[\s,\]}]/.test(this.#text.charAt(this.#i))) this.#i++
  }
}

/** Indexes a JSON text once, for looking up many paths. */
export class JsonLocator {
  readonly #positions: Map<string, JsonPosition>

  constructor(text: string) {
    const scanner = new Scanner(text.replace(/^\uFEFF/, ''))
    scanner.value([])
    this.#positions = scanner.positions
  }

  /**
   * Where `path` is: an object member's key, or an array element's value. For a
   * path that is not in the text (a missing member), the nearest enclosing one
   * that is; line 1 column 1 for the empty path.
   */
  locate(path: JsonPath): JsonPosition {
    for (let n = path.length; n > 0; n--) {
      const found = this.#positions.get(JSON.stringify(path.slice(0, n)))
      if (found !== undefined) return found
    }
    return { line: 1, column: 1 }
  }
}

/** One lookup: see JsonLocator.locate. */
export function locateJson(text: string, path: JsonPath): JsonPosition {
  return new JsonLocator(text).locate(path)
}

/** `machines.edge-1.tags[2]`: a path as the operator reads it. */
export function formatJsonPath(path: JsonPath): string {
  return path
    .map((part, i) =>
      typeof part === 'number'
        ? `[${part}]`
        : /^[A-Za-z_][\w-]*$/.test(part)
          ? `${i === 0 ? '' : '.'}${part}`
          : `[${JSON.stringify(part)}]`,
    )
    .join('')
}
