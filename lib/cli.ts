/**
 * Command-line plumbing shared by the coordinator, agent and admin commands:
 * each command is described once by a CommandSpec (usage, options with a
 * description and default, examples), and that one spec drives strict option
 * parsing, `--help`, and "did you mean" for a mistyped option. Errors name the
 * bad argument; the entry point prints a UsageError without a stack trace and
 * a HelpRequested's text as the command's output.
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

export class UsageError extends Error {
  override name = 'UsageError'
}

/** `--help`/`-h` was given: `text` is the command's help, to print on stdout with exit code 0. */
export class HelpRequested extends Error {
  override name = 'HelpRequested'
  readonly text: string
  constructor(text: string) {
    super('help requested')
    this.text = text
  }
}

/** One option of a command, documented where it is declared so help can never leave it out. */
export interface OptionDoc {
  type: 'string' | 'boolean'
  multiple?: boolean
  short?: string
  /** What the value looks like in help, e.g. "<dir>" (string options) */
  value?: string
  /** One line: what the option does */
  description: string
  /** The command fails without it (shown in help; the command itself checks) */
  required?: boolean
  /** Shown in help only; the command applies its own fallback when the option is absent */
  default?: string
}

export type Options = Readonly<Record<string, OptionDoc>>

export interface CommandSpec {
  /** As typed after `fleetmesh`, e.g. "deploy" or "admin grant" */
  name: string
  /** One line: what the command does */
  summary: string
  /** The synopsis, without the leading "usage: " */
  usage: string
  options: Options
  /** Complete command lines; help shows every one */
  examples: readonly string[]
  /** Lines help prints after the options, e.g. other ways to give them (lib/config-sources.ts) */
  notes?: readonly string[]
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>
  positionals: string[]
  /**
   * How to name each option's value in an error when it did not come from the
   * command line, e.g. "keepalive in /etc/fleetmesh/agent.json" or
   * "FLEETMESH_KEEPALIVE" (set by parseConfiguredCommand); see {@link optionLabel}.
   */
  sources?: Readonly<Record<string, string>>
}

/** True when `argv` asks for help (before any "--" that ends the options). */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false
    if (arg === '--help' || arg === '-h') return true
  }
  return false
}

/**
 * Joins `--opt value` into `--opt=value` when `--opt` takes a string and the
 * value starts with a dash but is not one of the command's options. parseArgs
 * refuses such values as ambiguous, yet base64url keys begin with '-' one time
 * in 64 (`admin grant --subject -Xb3…`), and a key printed by keygen must paste.
 */
function attachDashValues(argv: readonly string[], spec: CommandSpec): string[] {
  const takesValue = new Set<string>()
  const known = new Set<string>(['--help', '-h', '--'])
  for (const [name, o] of Object.entries(spec.options)) {
    known.add(`--${name}`)
    if (o.short !== undefined) known.add(`-${o.short}`)
    if (o.type === 'string') {
      takesValue.add(`--${name}`)
      if (o.short !== undefined) takesValue.add(`-${o.short}`)
    }
  }
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    const next = argv[i + 1]
    if (takesValue.has(arg) && next?.startsWith('-') && !known.has(next.split('=')[0] as string)) {
      out.push(arg.startsWith('--') ? `${arg}=${next}` : `${arg}${next}`)
      i++
    } else out.push(arg)
  }
  return out
}

/**
 * Parses a command's arguments against its spec. `--help`/`-h` throws
 * HelpRequested; an unknown option throws a UsageError that suggests the
 * closest known one.
 */
export function parseCommand(argv: readonly string[], spec: CommandSpec): Parsed {
  if (wantsHelp(argv)) throw new HelpRequested(formatHelp(spec))
  // node:util's parseArgs knows only its own fields; description, value and default are for help.
  const options = Object.fromEntries(
    Object.entries(spec.options).map(([name, o]) => [
      name,
      {
        type: o.type,
        ...(o.multiple ? { multiple: true } : {}),
        ...(o.short !== undefined ? { short: o.short } : {}),
      },
    ]),
  )
  try {
    const { values, positionals } = parseArgs({
      args: attachDashValues(argv, spec),
      options,
      allowPositionals: true,
      strict: true,
    })
    return { values: values as Parsed['values'], positionals }
  } catch (err) {
    const unknown = /^Unknown option '(--?[^']+)'/.exec((err as Error).message)?.[1]
    const message =
      unknown !== undefined
        ? `unknown option '${unknown}' for ${spec.name}${suggestion(
            unknown,
            Object.keys(spec.options).map((k) => `--${k}`),
          )}`
        : (err as Error).message
    throw new UsageError(
      `${message}\nusage: ${spec.usage}\n(fleetmesh ${spec.name} --help describes every option)`,
    )
  }
}

/** The help text of a command: usage, summary, every option with its description and default, examples. */
export function formatHelp(spec: CommandSpec): string {
  const rows = Object.entries(spec.options).map(([name, o]): [string, string] => {
    const flagText = `${o.short !== undefined ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` ${o.value ?? '<value>'}` : ''}`
    const notes = [
      o.required ? 'required' : '',
      o.multiple ? 'repeatable' : '',
      o.default !== undefined ? `default: ${o.default}` : '',
    ]
      .filter((n) => n.length > 0)
      .join('; ')
    return [flagText, notes ? `${o.description} (${notes})` : o.description]
  })
  rows.push(['-h, --help', 'show this help'])
  const width = Math.max(...rows.map(([f]) => f.length))
  return [
    `usage: ${spec.usage}`,
    ...(spec.summary ? ['', spec.summary] : []),
    '',
    'options:',
    ...rows.map(([f, d]) => `  ${f.padEnd(width)}  ${d}`),
    ...(spec.notes !== undefined && spec.notes.length > 0 ? ['', ...spec.notes] : []),
    ...(spec.examples.length > 0
      ? ['', spec.examples.length === 1 ? 'example:' : 'examples:', ...spec.examples.map((e) => `  ${e}`)]
      : []),
  ].join('\n')
}

/** Levenshtein distance: how many single-character edits turn `a` into `b`. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row.push(Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost))
    }
    prev = row
  }
  return prev[b.length] as number
}

/** The known word closest to `word`, when it is close enough to be a likely typo. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const candidate of known) {
    const d = editDistance(word, candidate)
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  // Beyond a third of the word it is another word, not a typo of this one.
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

/** "; did you mean 'x'?" for a likely typo of a known word, else nothing. */
export function suggestion(word: string, known: readonly string[]): string {
  const match = closest(word, known)
  return match === undefined ? '' : `; did you mean '${match}'?`
}

/** Where an option's value came from, for errors: `--name`, or the file key or variable that set it. */
export function optionLabel(p: Parsed, name: string): string {
  return p.sources?.[name] ?? `--${name}`
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name]
  return typeof v === 'string' ? v : undefined
}

export function required(p: Parsed, name: string, usage: string): string {
  const v = str(p, name)
  if (v === undefined || v === '') throw new UsageError(`--${name} is required\nusage: ${usage}`)
  return v
}

export function list(p: Parsed, name: string): string[] {
  const v = p.values[name]
  const items = Array.isArray(v) ? v : typeof v === 'string' ? [v] : []
  return items
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true
}

export function int(p: Parsed, name: string, fallback: number, min: number, max: number): number {
  const v = str(p, name)
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`${optionLabel(p, name)} must be a whole number from ${min} to ${max}, got "${v}"`)
  }
  return n
}

/** A duration as the CLI and the fleet file write it: 0, or a count and a unit (ms, s, m, h, d). */
export const DURATION_PATTERN = /^(?:0|(\d+)(ms|s|m|h|d))$/

/** Parses durations like 90s, 15m, 12h, 30d. */
export function duration(p: Parsed, name: string, fallbackMs: number): number {
  const v = str(p, name)
  if (v === undefined) return fallbackMs
  if (v === '0') return 0
  const m = DURATION_PATTERN.exec(v)
  if (!m)
    throw new UsageError(`${optionLabel(p, name)} must be a duration like 90s, 15m, 12h or 30d, got "${v}"`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as 'ms' | 's' | 'm' | 'h' | 'd'
  ]
  const ms = Number(m[1]) * unit
  // Node's timers take at most 2^31-1 ms; callers bound their own ranges, this only keeps the number exact
  if (!Number.isSafeInteger(ms)) throw new UsageError(`${optionLabel(p, name)} is too long: "${v}"`)
  return ms
}

/** Prints a value as JSON (for scripts) or via the human formatter. */
export function output(json: boolean, value: unknown, human: () => string): void {
  if (json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
  else process.stdout.write(`${human()}\n`)
}

/** Parses `--name 7001,7002` into TCP ports; "none" gives an empty list. */
export function ports(p: Parsed, name: string, fallback: number[]): number[] {
  const items = list(p, name)
  if (items.length === 0) return fallback
  if (items.length === 1 && items[0] === 'none') return []
  return items.map((item) => {
    const n = Number(item)
    if (!Number.isInteger(n) || n < 1 || n > 65_535)
      throw new UsageError(`${optionLabel(p, name)}: "${item}" is not a TCP port`)
    return n
  })
}

/** Parses `--name ip:port` observer endpoints. */
export function endpoints(p: Parsed, name: string): string[] {
  const items = list(p, name)
  for (const item of items) {
    if (!/^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/.test(item))
      throw new UsageError(`${optionLabel(p, name)}: "${item}" is not an ipv4:port endpoint`)
  }
  return items
}

/** "@file" reads an argument's value from a file, so tokens need not appear in shell history. */
export async function readTextArg(value: string): Promise<string> {
  if (!value.startsWith('@')) return value
  try {
    return (await readFile(value.slice(1), 'utf8')).trim()
  } catch (err) {
    throw new UsageError(`cannot read ${value.slice(1)}: ${(err as Error).message}`)
  }
}
