// The real `fleetmesh` command's help, version and "did you mean": every
// command answers --help with each option the parser accepts (the flag list
// comes from the same CommandSpec the parser uses, so an option added without
// being documented fails here), and typos get a suggestion and exit code 2.
//
// Every command's --help runs through the CLI's own `main` in this process (a
// process each would cost a Node start-up per command, about a minute of CPU in
// all); the spawned tests below check that the real command prints that same
// text and routes help, version and typos the same way.
import { spawn } from 'node:child_process'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { adminSpecs } from '../../admin/cli.ts'
import { AGENT_COMMAND } from '../../agent/cli.ts'
import { main } from '../../bin/main.ts'
import { COORDINATOR_COMMAND } from '../../coordinator/cli.ts'
import { STORE_COMMAND } from '../../coordinator/store-cli.ts'
import { type CommandSpec, FLEETMESH_VERSION } from '../../lib/index.ts'
import { RELAY_COMMAND } from '../../relay/cli.ts'
import { type CliResult, fleetmeshArgv, runToCompletion } from '../../testkit/fleetmesh.ts'

const SPECS: CommandSpec[] = [
  COORDINATOR_COMMAND,
  STORE_COMMAND,
  AGENT_COMMAND,
  RELAY_COMMAND,
  // doctor is an admin command: a machine name asks that agent, --state a daemon here
  ...adminSpecs(),
]

function fleetmesh(...args: string[]): Promise<CliResult> {
  return runToCompletion(process.execPath, fleetmeshArgv(args), { timeoutMs: 30_000 })
}

/** `fleetmesh <args>` run by the CLI's `main` in this process, its output captured. */
async function inProcess(...args: string[]): Promise<Omit<CliResult, 'ms'>> {
  const out: string[] = []
  const err: string[] = []
  const capture = (into: string[]) => (chunk: string | Uint8Array) => {
    into.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString())
    return true
  }
  vi.spyOn(process.stdout, 'write').mockImplementation(capture(out))
  vi.spyOn(process.stderr, 'write').mockImplementation(capture(err))
  try {
    const code = await main(args)
    return { code, stdout: out.join(''), stderr: err.join('') }
  } finally {
    vi.restoreAllMocks()
  }
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('fleetmesh <command> --help', () => {
  it('covers every routed command', () => {
    expect(SPECS.map((s) => s.name).sort()).toEqual(
      [
        'admin grant',
        'admin install',
        'admin keygen',
        'admin revoke',
        'agent',
        'apply',
        'audit',
        'coordinator',
        'coordinators add',
        'coordinators list',
        'deploy',
        'doctor',
        'enroll',
        'explain',
        'init',
        'inventory',
        'log',
        'logs',
        'machines',
        'nix keygen',
        'nix push',
        'ping',
        'plan',
        'relay',
        'rollout abort',
        'rollout list',
        'rollout pause',
        'rollout resume',
        'rollout show',
        'store',
        'ui',
        'watch',
      ].sort(),
    )
  })

  for (const spec of SPECS) {
    it(`${spec.name} --help describes every option, its default and an example`, async () => {
      const r = await inProcess(...spec.name.split(' '), '--help')
      expect(r.stderr).toBe('')
      expect(r.code).toBe(0)
      expect(r.stdout).toContain(`usage: ${spec.usage}`)
      expect(spec.examples.length).toBeGreaterThan(0)
      for (const example of spec.examples) expect(r.stdout).toContain(example)
      for (const [name, option] of Object.entries(spec.options)) {
        expect(option.description.trim(), `--${name} of ${spec.name} has no description`).not.toBe('')
        const line = r.stdout.split('\n').find((l) => l.includes(`--${name} `) || l.endsWith(`--${name}`))
        expect(line, `--${name} missing from ${spec.name} --help`).toBeDefined()
        expect(r.stdout).toContain(option.description)
        if (option.default !== undefined) expect(r.stdout).toContain(`default: ${option.default}`)
      }
    })
  }

  it('help deploy, deploy -h and deploy --help print the same, in the real command as in main', async () => {
    const [viaHelp, short, long] = await Promise.all([
      fleetmesh('help', 'deploy'),
      fleetmesh('deploy', '-h'),
      fleetmesh('deploy', '--help'),
    ])
    expect(long.code).toBe(0)
    expect(long.stdout).toBe((await inProcess('deploy', '--help')).stdout)
    expect(viaHelp).toMatchObject({ code: 0, stdout: long.stdout })
    expect(short).toMatchObject({ code: 0, stdout: long.stdout })
  }, 30_000)

  it('help admin grant is admin grant --help', async () => {
    const viaHelp = await inProcess('help', 'admin', 'grant')
    const long = await inProcess('admin', 'grant', '--help')
    expect(long.code).toBe(0)
    expect(viaHelp).toMatchObject({ code: 0, stdout: long.stdout })
  })
})

describe('fleetmesh --version', () => {
  it.each([['--version'], ['version']])(
    '%s prints the version and the Node version',
    async (arg) => {
      const r = await fleetmesh(arg)
      expect(r.code).toBe(0)
      expect(r.stdout.trim()).toBe(`fleetmesh ${FLEETMESH_VERSION} (node ${process.versions.node})`)
    },
    30_000,
  )
})

describe('did you mean', () => {
  it('suggests the closest command for an unknown one', async () => {
    const r = await fleetmesh('depoly')
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("unknown command 'depoly'; did you mean 'deploy'?")
  }, 30_000)

  it('suggests the closest option for an unknown one', async () => {
    const r = await fleetmesh('deploy', '--helth-check', 'true')
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("unknown option '--helth-check' for deploy; did you mean '--health-check'?")
  }, 30_000)

  it('suggests the closest subcommand of a group', async () => {
    const r = await fleetmesh('admin', 'grnat')
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("unknown admin command 'grnat'; did you mean 'grant'?")
  }, 30_000)
})

describe('a reader that stops early', () => {
  it('ends quietly with code 0 when stdout is closed before the help is written', async () => {
    const child = spawn(process.execPath, fleetmeshArgv(['deploy', '--help']), {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    // like `fleetmesh deploy --help | true`: the reader is gone before the first write
    child.stdout.destroy()
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const code = await new Promise<number | null>((done) => child.on('close', (c) => done(c)))
    expect(stderr).toBe('')
    expect(code).toBe(0)
  }, 30_000)
})
