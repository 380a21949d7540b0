/** Starting the updater child process (updater-child.ts) of the kill -9 tests, and reading what it printed. */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import type { OfferOutcome, UpdaterStatus } from '../../agent/updater.ts'

const CHILD = join(import.meta.dirname, 'updater-child.ts')

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export function startChild(configPath: string) {
  const child = spawn(process.execPath, [CHILD, configPath], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString()
  })
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  const exited = new Promise<Exit>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  )
  return { child, exited }
}

export function parseResult(exit: Exit): { outcome: OfferOutcome | null; current: UpdaterStatus } {
  if (exit.code !== 0) throw new Error(`child exited ${exit.code ?? exit.signal}: ${exit.stderr}`)
  return JSON.parse(exit.stdout)
}
