/**
 * stopHost keeps the process alive until the host has stopped. libp2p's own
 * bound on closing a connection is a timer that does not hold the event loop,
 * so a CLI whose last handle was that connection's socket used to exit in the
 * middle of the stop with exit code 13 ("unsettled top-level await"). The child
 * process below stands in for that: its only pending work is such a timer.
 */
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runProcess } from '../../lib/index.ts'

const root = join(import.meta.dirname, '..', '..')
const node = join(root, 'node_modules', '.bin', 'node')

/** A module that stops a "host" whose stop waits on an unref'd timer, as libp2p's does. */
function script(useStopHost: boolean): string {
  const stop = `() => new Promise((resolve) => setTimeout(resolve, 300).unref())`
  return [
    `import { stopHost } from ${JSON.stringify(join(root, 'net', 'index.ts'))}`,
    `const host = { stop: ${stop} }`,
    useStopHost ? 'await stopHost(host)' : 'await host.stop()',
    `console.log('stopped')`,
  ].join('\n')
}

async function run(useStopHost: boolean) {
  return runProcess([node, '--input-type=module', '-e', script(useStopHost)], {
    cwd: root,
    timeoutMs: 30_000,
  })
}

describe('stopHost', () => {
  it('finishes the stop and lets the command end normally', async () => {
    const r = await run(true)
    expect(r.output).toContain('stopped')
    expect(r.code).toBe(0)
  })

  it('a bare stop with only an unref-ed timer pending dies half-way (the failure stopHost prevents)', async () => {
    const r = await run(false)
    expect(r.output).not.toContain('stopped')
    expect(r.code).toBe(13)
  })
})
