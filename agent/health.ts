/**
 * Health checks: the manifest's command, run in the new generation until it
 * passes or its retries run out (the process handling is lib/process.ts).
 */
import { describeResult, type RunResult, runProcess, sleep } from '../lib/index.ts'
import type { HealthCheck } from '../protocol/index.ts'
import type { LiveOutput } from './activator.ts'

export class HealthCheckError extends Error {
  override name = 'HealthCheckError'
  readonly attempts: number
  readonly last: RunResult
  constructor(attempts: number, last: RunResult, message: string) {
    super(message)
    this.attempts = attempts
    this.last = last
  }
}

export interface HealthCheckOptions {
  cwd: string
  env?: NodeJS.ProcessEnv
  signal?: AbortSignal
  /** Takes each attempt's command line and output as they come (the live update log). */
  output?: LiveOutput
}

/**
 * Runs the check up to 1 + retries times, intervalMs apart, until it exits 0.
 * Resolves with the passing attempt; throws HealthCheckError with the last failure.
 */
export async function runHealthCheck(
  check: HealthCheck,
  options: HealthCheckOptions,
): Promise<{ attempts: number; result: RunResult }> {
  const total = check.retries + 1
  let last: RunResult | undefined
  for (let attempt = 1; attempt <= total; attempt++) {
    if (attempt > 1) {
      // Stopped between attempts: fail with the last real result instead of starting another.
      const stopped = await sleep(check.intervalMs, options.signal).then(
        () => false,
        () => true,
      )
      if (stopped) break
    }
    options.output?.line(
      `$ ${check.command.join(' ')}${total > 1 ? ` (attempt ${attempt} of ${total})` : ''}`,
    )
    last = await runProcess(check.command, {
      cwd: options.cwd,
      timeoutMs: check.timeoutMs,
      killGroupOnExit: true,
      ...(options.env !== undefined ? { env: options.env } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      ...(options.output !== undefined ? { onOutput: options.output.write } : {}),
    })
    if (last.code === 0) return { attempts: attempt, result: last }
    if (options.signal?.aborted) break
  }
  const result = last as RunResult
  throw new HealthCheckError(
    total,
    result,
    `health check failed ${total === 1 ? 'once' : `${total} times`}: ${describeResult(check.command, result)}`,
  )
}
