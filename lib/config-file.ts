/**
 * A command's options read from a JSON file (`--config`): one object whose
 * keys are the command's long option names and whose values are written as on
 * the command line, `{"state": "/var/lib/x", "listen": ["/ip4/0.0.0.0/tcp/4001"],
 * "keepalive": "10s", "json": true}`. The command's CommandSpec decides which
 * keys exist and what type each value has; every error names the file and the
 * key. Keys starting with "//" are comments, since JSON has none.
 *
 * JSON rather than TOML: Node parses JSON itself and reports line and column;
 * TOML would need a parser dependency (lib/ may import only Node built-ins and
 * zod) or a hand-written partial one. Configuration tools (Nix's
 * builtins.toJSON, Ansible's to_json, jq) all write JSON.
 */
import { open } from 'node:fs/promises'
import { type CommandSpec, type OptionDoc, suggestion, UsageError } from './cli.ts'

/** A service's options fit in a few KiB; a bigger file is the wrong file. */
export const MAX_CONFIG_BYTES = 256 * 1024

/** Options that only the command line sets (the file's own name, and what to do with it). */
const COMMAND_LINE_ONLY = new Set(['config', 'print-config'])

export type OptionValue = string | boolean | string[]

/** Splits a repeatable option's value on commas, as the command line's `list` does. */
export function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
}

/** Reads at most MAX_CONFIG_BYTES of `path`; `via` says how the file was named (--config or a variable). */
async function readBounded(path: string, via: string): Promise<string> {
  let handle: Awaited<ReturnType<typeof open>>
  try {
    handle = await open(path, 'r')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const problem = code === 'ENOENT' ? 'does not exist' : `cannot be read (${(err as Error).message})`
    throw new UsageError(
      `the config file ${path} (from ${via}) ${problem}; create it ({} will do) or leave ${via} out`,
    )
  }
  try {
    const chunks: Buffer[] = []
    let total = 0
    // a loop with a bound rather than stat + readFile: a FIFO or /dev/stdin has no size to check
    for (;;) {
      const chunk = Buffer.alloc(64 * 1024)
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null)
      if (bytesRead === 0) break
      total += bytesRead
      if (total > MAX_CONFIG_BYTES)
        throw new UsageError(
          `the config file ${path} is larger than ${MAX_CONFIG_BYTES / 1024} KiB; it should hold a few options, is it the right file?`,
        )
      chunks.push(chunk.subarray(0, bytesRead))
    }
    return Buffer.concat(chunks).toString('utf8')
  } catch (err) {
    if (err instanceof UsageError) throw err
    throw new UsageError(`cannot read the config file ${path}: ${(err as Error).message}`)
  } finally {
    await handle.close()
  }
}

/** What a JSON value is, for "must be X, not Y". */
function kind(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`
  return `${typeof value === 'number' ? 'the number' : ''} ${String(value)}`.trim()
}

/** A value of the right shape for the message: the default when it is one word, else the placeholder. */
function example(doc: OptionDoc): string {
  return doc.default !== undefined && /^\S+$/.test(doc.default) ? doc.default : (doc.value ?? 'value')
}

function checkValue(name: string, doc: OptionDoc, raw: unknown, path: string): OptionValue {
  const where = `${name} in ${path}`
  if (doc.type === 'boolean') {
    if (typeof raw === 'boolean') return raw
    throw new UsageError(`${where} must be true or false, not ${kind(raw)}`)
  }
  if (doc.multiple === true) {
    if (typeof raw === 'string') return splitList(raw)
    if (Array.isArray(raw) && raw.every((item) => typeof item === 'string')) return raw.flatMap(splitList)
    throw new UsageError(
      `${where} must be a list of strings like ["${example(doc)}"] (or one string), not ${kind(raw)}`,
    )
  }
  if (typeof raw === 'string') return raw
  throw new UsageError(
    `${where} must be a string like "${example(doc)}", not ${kind(raw)} (values are written as on the command line)`,
  )
}

/** "(line 3 column 5)" is in V8's messages except at the end of the input; say where that is. */
function jsonProblem(err: Error, text: string): string {
  if (/\(line \d+ column \d+\)/.test(err.message)) return err.message
  return `${err.message} (the file ends at line ${text.split('\n').length})`
}

/**
 * Reads and checks the options in the JSON file at `path` against `spec`:
 * unknown keys (with a "did you mean"), values of the wrong type, bad JSON
 * (with line and column) and oversized files are UsageErrors naming the file.
 * `via` is how the file was named, for the message when it is missing.
 */
export async function readConfigFile(
  path: string,
  spec: CommandSpec,
  via = '--config',
): Promise<Record<string, OptionValue>> {
  const text = (await readBounded(path, via)).replace(/^\uFEFF/, '')
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new UsageError(`the config file ${path} is not valid JSON: ${jsonProblem(err as Error, text)}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new UsageError(
      `the config file ${path} must hold one JSON object of options, like {"state": "/var/lib/x"}, not ${kind(parsed)}`,
    )
  const known = Object.keys(spec.options).filter((name) => !COMMAND_LINE_ONLY.has(name))
  const values: Record<string, OptionValue> = {}
  for (const [key, raw] of Object.entries(parsed)) {
    if (key.startsWith('//')) continue
    // hasOwn: a key like "__proto__" or "toString" must not find Object.prototype's members
    const doc = Object.hasOwn(spec.options, key) ? spec.options[key] : undefined
    if (doc === undefined || COMMAND_LINE_ONLY.has(key)) {
      const why = COMMAND_LINE_ONLY.has(key)
        ? `; --${key} is given on the command line only`
        : suggestion(key.replace(/^-+/, ''), known)
      throw new UsageError(
        `unknown key "${key}" in the config file ${path}${why}\n` +
          `(its keys are the long options of fleetmesh ${spec.name} --help, without the dashes)`,
      )
    }
    values[key] = checkValue(key, doc, raw, path)
  }
  return values
}
