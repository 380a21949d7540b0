/**
 * The README's "Using it" trial, run as written: the first `sh` block under
 * that heading goes to bash line by line, as a new operator pastes it, with
 * `fleetmesh` on PATH (a link to bin/fleetmesh.js, as `npm link` would make;
 * the release tarball itself is tested by walkthrough.test.ts). The one change
 * made to the text is the coordinator's port, swapped for a free one so that
 * the test cannot collide with anything on the machine.
 */
import { mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BIN, runToCompletion } from '../../testkit/fleetmesh.ts'
import { freePort } from '../../testkit/harness.ts'

const README = resolve(import.meta.dirname, '../../README.md')

/** The first ```sh block after the "## Using it" heading. */
export function usingItBlock(markdown: string): string {
  const section = markdown.slice(markdown.indexOf('\n## Using it'))
  const m = /```sh\n([\s\S]*?)```/.exec(section)
  if (m === null) throw new Error('README.md has no sh block under "## Using it"')
  return m[1] as string
}

describe.skipIf(process.platform !== 'linux')("the README's trial, pasted line by line", () => {
  let work = ''

  afterAll(async () => {
    if (work === '') return
    // A failed run may leave the daemons the block started in the background.
    for (const name of await readdir('/proc')) {
      if (!/^\d+$/.test(name)) continue
      const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
      if (cmd.includes(work)) process.kill(Number(name), 'SIGKILL')
    }
    await rm(work, { recursive: true, force: true })
  })

  it('inits, runs a coordinator and two agents, deploys, refuses an unknown tag, and stops them', async () => {
    work = await mkdtemp(join(tmpdir(), 'fm-readme-'))
    const bin = join(work, 'bin')
    await runToCompletion('mkdir', [bin], { timeoutMs: 5_000 })
    await symlink(BIN, join(bin, 'fleetmesh'))
    const block = usingItBlock(await readFile(README, 'utf8'))
    expect(block).toContain('/tcp/14001')
    const script = block.replaceAll('/tcp/14001', `/tcp/${await freePort()}`)
    const r = await runToCompletion('bash', ['--norc', '--noprofile', '-c', script], {
      // mktemp -d in the block lands here, so cleanup finds what it started
      env: { PATH: `${bin}:${process.env.PATH}`, TMPDIR: work, HOME: work, FLEETMESH_HOME: '' },
      timeoutMs: 240_000,
      label: "README's Using it block",
    })
    const transcript = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`
    expect(r.code, transcript).toBe(0)
    // the deploy to all reached both machines: the rows of `fleetmesh machines` (deploy prints the table too)
    const machines = r.stdout.split('\n').filter((l) => /^edge-[12]\s+lab\s+yes\s/.test(l))
    expect(machines, transcript).toHaveLength(4)
    for (const row of machines) expect(row, transcript).toContain('committed')
    expect(r.stdout + r.stderr, transcript).toContain('refused at once')
    expect(r.stderr, transcript).toContain('tag:nope')
    expect(r.stdout, transcript).toMatch(/verified/)
    // `kill …; wait` ended every daemon the block started
    const left: string[] = []
    for (const name of await readdir('/proc')) {
      if (!/^\d+$/.test(name)) continue
      const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
      if (cmd.includes(work)) left.push(cmd.replaceAll('\0', ' '))
    }
    expect(left).toEqual([])
  }, 300_000)
})
