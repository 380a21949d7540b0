/**
 * Command-line plumbing shared by the coordinator, agent and admin commands:
 * strict option parsing with errors that name the bad argument, and a UsageError
 * the entry point prints without a stack trace.
 */
import { readFile } from 'node:fs/promises'
import { type ParseArgsConfig, parseArgs } from 'node:util'

export class UsageError extends Error {
  override name = 'UsageError'
}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>
  positionals: string[]
}

export function parseCommand(argv: string[], options: OptionSpec, usage: string): Parsed {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
    return { values: values as Parsed['values'], positionals }
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\nusage: ${usage}`)
  }
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
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got "${v}"`)
  }
  return n
}

/** Parses durations like 90s, 15m, 12h, 30d. */
export function duration(p: Parsed, name: string, fallbackMs: number): number {
  const v = str(p, name)
  if (v === undefined) return fallbackMs
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(v)
  if (!m) throw new UsageError(`--${name} must be a duration like 90s, 15m, 12h or 30d, got "${v}"`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as 'ms' | 's' | 'm' | 'h' | 'd'
  ]
  return Number(m[1]) * unit
}

/** Prints a value as JSON (for scripts) or via the human formatter. */
export function output(json: boolean, value: unknown, human: () => string): void {
  if (json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
  else process.stdout.write(`${human()}\n`)
}

/** Renders rows as an aligned text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const fmt = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd()
  return [fmt(headers), ...rows.map(fmt)].join('\n')
}

/** Parses `--name 7001,7002` into TCP ports; "none" gives an empty list. */
export function ports(p: Parsed, name: string, fallback: number[]): number[] {
  const items = list(p, name)
  if (items.length === 0) return fallback
  if (items.length === 1 && items[0] === 'none') return []
  return items.map((item) => {
    const n = Number(item)
    if (!Number.isInteger(n) || n < 1 || n > 65_535)
      throw new UsageError(`--${name}: "${item}" is not a TCP port`)
    return n
  })
}

/** Parses `--name ip:port` observer endpoints. */
export function endpoints(p: Parsed, name: string): string[] {
  const items = list(p, name)
  for (const item of items) {
    if (!/^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/.test(item))
      throw new UsageError(`--${name}: "${item}" is not an ipv4:port endpoint`)
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
