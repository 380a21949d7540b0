// The real `fleetmesh` command's help, version and "did you mean": every
// command answers --help with each option the parser accepts (the flag list
// comes from the same CommandSpec the parser uses, so an option added without
// being documented fails here), and typos get a suggestion and exit code 2.
import { spawn } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { adminSpecs } from '../../admin/cli.ts'
import { AGENT_COMMAND } from '../../agent/cli.ts'
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
      const r = await fleetmesh(...spec.name.split(' '), '--help')
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
    }, 30_000)
  }

  it('help deploy, deploy -h and deploy --help print the same', async () => {
    const [viaHelp, short, long] = await Promise.all([
      fleetmesh('help', 'deploy'),
      fleetmesh('deploy', '-h'),
      fleetmesh('deploy', '--help'),
    ])
    expect(long.code).toBe(0)
    expect(viaHelp).toMatchObject({ code: 0, stdout: long.stdout })
    expect(short).toMatchObject({ code: 0, stdout: long.stdout })
  }, 30_000)

  it('help admin grant is admin grant --help', async () => {
    const [viaHelp, long] = await Promise.all([
      fleetmesh('help', 'admin', 'grant'),
      fleetmesh('admin', 'grant', '--help'),
    ])
    expect(long.code).toBe(0)
    expect(viaHelp).toMatchObject({ code: 0, stdout: long.stdout })
  }, 30_000)
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
