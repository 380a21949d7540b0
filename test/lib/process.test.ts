import type { Readable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { describeResult, runProcess } from '../../lib/index.ts'

async function text(stream: Readable): Promise<string> {
  let out = ''
  for await (const chunk of stream) out += String(chunk)
  return out
}

describe('runProcess with a stdout consumer', () => {
  it('gives stdout to the consumer and keeps only stderr in output', async () => {
    let stdout = ''
    const result = await runProcess(['sh', '-c', 'echo data; echo warning >&2; echo more'], {
      cwd: '/',
      timeoutMs: 10_000,
      stdout: async (s) => {
        stdout = await text(s)
      },
    })
    expect(result.code).toBe(0)
    expect(stdout).toBe('data\nmore\n')
    expect(result.output).toBe('warning\n')
    expect(result.consumerError).toBeNull()
  })

  it('kills the command when the consumer fails, and says why', async () => {
    const result = await runProcess(['sh', '-c', 'while true; do echo x; done'], {
      cwd: '/',
      timeoutMs: 10_000,
      stdout: async (s) => {
        for await (const _ of s) throw new Error('disk full')
      },
    })
    expect(result.consumerError).toBe('disk full')
    expect(result.code).not.toBe(0)
    expect(describeResult(['writer'], result)).toMatch(/reading its output failed: disk full/)
  })
})
