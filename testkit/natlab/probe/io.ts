// Shared plumbing for the probe scripts in this folder: events go to stdout as JSON lines (the
// lab reads them), commands come from stdin as JSON lines, and a probe exits as
// soon as its stdin closes so a killed test run leaves no orphan behind.

import { createInterface } from 'node:readline'

export function emit(event: { event: string; [key: string]: unknown }): void {
  process.stdout.write(`${JSON.stringify(event)}\n`)
}

/** Call `onCommand` for each JSON object line on stdin; exit when stdin ends. */
export function readCommands(onCommand: (command: Record<string, unknown>) => void): void {
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      emit({ event: 'bad-command', line })
      return
    }
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
      onCommand(parsed as Record<string, unknown>)
    } else {
      emit({ event: 'bad-command', line })
    }
  })
  rl.on('close', () => process.exit(0))
}

export function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code
  return err instanceof Error ? err.name : 'UNKNOWN'
}

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`) to plain IPv4. */
export function plainAddress(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '')
}

export function str(command: Record<string, unknown>, key: string): string {
  const value = command[key]
  if (typeof value !== 'string') throw new TypeError(`command field "${key}" must be a string`)
  return value
}

export function optNum(command: Record<string, unknown>, key: string): number | undefined {
  const value = command[key]
  if (value === undefined) return undefined
  if (typeof value !== 'number') throw new TypeError(`command field "${key}" must be a number`)
  return value
}
