import { join } from 'node:path'
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

describe('isProcessRunning', () => {
  const root = join(import.meta.dirname, '..', '..')
  it('counts a process owned by another user as running (EPERM), as doctor and the state lock need', async () => {
    // Not root: PID 1 belongs to root, so signalling it fails with EPERM. Root can signal
    // anything, so it drops to nobody first (CI runs as root).
    const script = `import { isProcessRunning } from ${JSON.stringify(join(root, 'lib', 'process.ts'))}
console.log(isProcessRunning(1), isProcessRunning(2 ** 22 + 1))`
    const node = join(root, 'node_modules', '.bin', 'node')
    const asNobody =
      process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : []
    const r = await runProcess([...asNobody, node, '--input-type=module', '-e', script], {
      cwd: root,
      timeoutMs: 30_000,
    })
    expect(r.code, r.output).toBe(0)
    // beyond pid_max: no such process
    expect(r.output.trim()).toBe('true false')
  })
})
