/**
 * Options from the command line, FLEETMESH_* variables and a --config JSON
 * file (lib/config-sources.ts, lib/config-file.ts): precedence, and every
 * error naming the file key or the variable it came from.
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  type CommandSpec,
  ConfigPrintRequested,
  configurable,
  duration,
  envName,
  flag,
  formatHelp,
  HelpRequested,
  int,
  list,
  MAX_CONFIG_BYTES,
  type Parsed,
  parseConfiguredCommand,
  ports,
  str,
  UsageError,
} from '../../lib/index.ts'

const SPEC: CommandSpec = configurable({
  name: 'demo',
  summary: 'a daemon',
  usage: 'fleetmesh demo --state <dir>',
  options: {
    state: { type: 'string', value: '<dir>', description: 'state', required: true },
    listen: { type: 'string', multiple: true, value: '<multiaddr>', description: 'listen' },
    keepalive: { type: 'string', value: '<duration>', description: 'ping interval', default: '10s' },
    'coordinator-addr': { type: 'string', multiple: true, value: '<multiaddr>', description: 'dial' },
    'max-peers': { type: 'string', value: 'N', description: 'peers', default: '64' },
    'observer-ports': { type: 'string', multiple: true, value: 'p1,p2|none', description: 'ports' },
    json: { type: 'boolean', description: 'JSON lines' },
  },
  examples: [],
})

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-config-'))
})
afterEach(() => rm(dir, { recursive: true, force: true }))

async function file(text: string, name = 'demo.json'): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, text)
  return path
}

async function usageError(run: () => Promise<unknown>): Promise<string> {
  const err = await run().then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(UsageError)
  return (err as Error).message
}

describe('parseConfiguredCommand: where options come from', () => {
  it('reads every option kind from the --config file', async () => {
    const path = await file(
      JSON.stringify({
        '//': 'comment keys are skipped',
        state: '/var/lib/x',
        listen: ['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/2'],
        keepalive: '3s',
        'observer-ports': '4002,4003',
        json: true,
      }),
    )
    const p = await parseConfiguredCommand(['--config', path], SPEC, {})
    expect(str(p, 'state')).toBe('/var/lib/x')
    expect(list(p, 'listen')).toEqual(['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/2'])
    expect(duration(p, 'keepalive', 10_000)).toBe(3_000)
    expect(ports(p, 'observer-ports', [])).toEqual([4002, 4003])
    expect(flag(p, 'json')).toBe(true)
  })

  it('reads FLEETMESH_<OPTION> variables: dashes as underscores, lists comma-separated, booleans 1/0', async () => {
    expect(envName('coordinator-addr')).toBe('FLEETMESH_COORDINATOR_ADDR')
    const p = await parseConfiguredCommand([], SPEC, {
      FLEETMESH_STATE: '/srv/x',
      FLEETMESH_COORDINATOR_ADDR: '/ip4/10.0.0.1/tcp/4001, /ip4/10.0.0.2/tcp/4001',
      FLEETMESH_JSON: '1',
      FLEETMESH_HOME: '/root/.config/fleetmesh',
      FLEETMESH_KEEPALIVE: '',
      FLEETMESH_NO_SUCH_OPTION: 'x',
    })
    expect(str(p, 'state')).toBe('/srv/x')
    expect(list(p, 'coordinator-addr')).toEqual(['/ip4/10.0.0.1/tcp/4001', '/ip4/10.0.0.2/tcp/4001'])
    expect(flag(p, 'json')).toBe(true)
    expect(str(p, 'keepalive'), 'an empty variable is unset').toBeUndefined()
  })

  it('command line over environment over file over defaults, each option on its own', async () => {
    const path = await file(
      JSON.stringify({ state: '/from/file', listen: ['/ip4/1.1.1.1/tcp/1'], keepalive: '1s', json: true }),
    )
    const env = { FLEETMESH_STATE: '/from/env', FLEETMESH_LISTEN: '/ip4/2.2.2.2/tcp/2', FLEETMESH_JSON: 'no' }
    const p = await parseConfiguredCommand(['--config', path, '--state', '/from/cli'], SPEC, env)
    expect(str(p, 'state')).toBe('/from/cli')
    expect(list(p, 'listen'), 'a list replaces, not extends').toEqual(['/ip4/2.2.2.2/tcp/2'])
    expect(flag(p, 'json'), 'FLEETMESH_JSON=no turns the file’s true off').toBe(false)
    expect(str(p, 'keepalive')).toBe('1s')
    expect(int(p, 'max-peers', 64, 1, 1000), 'nobody set it: the default').toBe(64)
    expect(p.sources).toMatchObject({
      state: '--state',
      listen: 'FLEETMESH_LISTEN',
      keepalive: `keepalive in ${path}`,
    })
  })

  it('takes the file from FLEETMESH_CONFIG, and --config wins over it', async () => {
    const a = await file('{"state": "/a"}', 'a.json')
    const b = await file('{"state": "/b"}', 'b.json')
    expect(str(await parseConfiguredCommand([], SPEC, { FLEETMESH_CONFIG: a }), 'state')).toBe('/a')
    expect(str(await parseConfiguredCommand(['--config', b], SPEC, { FLEETMESH_CONFIG: a }), 'state')).toBe(
      '/b',
    )
  })

  it('--print-config prints the merged options as a config file, with where each came from', async () => {
    const path = await file('{"state": "/from/file", "keepalive": "5s"}')
    const err = await parseConfiguredCommand(['--config', path, '--json', '--print-config'], SPEC, {
      FLEETMESH_LISTEN: '/ip4/1.2.3.4/tcp/1,/ip4/1.2.3.4/tcp/2',
    }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigPrintRequested)
    expect(err).toBeInstanceOf(HelpRequested)
    const printed = JSON.parse((err as ConfigPrintRequested).text) as Record<string, unknown>
    expect(printed).toMatchObject({
      state: '/from/file',
      keepalive: '5s',
      listen: ['/ip4/1.2.3.4/tcp/1', '/ip4/1.2.3.4/tcp/2'],
      json: true,
      '//from': { state: `state in ${path}`, listen: 'FLEETMESH_LISTEN', json: '--json' },
    })
    expect(printed).not.toHaveProperty('config')
    const again = await file((err as ConfigPrintRequested).text, 'again.json')
    const reread = await parseConfiguredCommand(['--config', again], SPEC, {})
    expect(list(reread, 'listen'), 'the printed file reads back').toEqual(printed.listen)
  })

  it('help shows --config, --print-config and the environment form', () => {
    const help = formatHelp(SPEC)
    expect(help).toContain('--config <file.json>')
    expect(help).toContain('--print-config')
    expect(help).toContain('FLEETMESH_<OPTION>')
    expect(help).toContain('comma-separated')
    expect(help.split('\n')[0]).toContain('[--config <file.json>]')
  })
})

describe('parseConfiguredCommand: errors name the key and the file or variable', () => {
  it('an unknown key, with "did you mean"', async () => {
    const path = await file('{"state": "/x", "keepalve": "1s"}')
    const message = await usageError(() => parseConfiguredCommand(['--config', path], SPEC, {}))
    expect(message).toContain(`unknown key "keepalve" in the config file ${path}; did you mean 'keepalive'?`)
    expect(message).toContain('fleetmesh demo --help')
  })

  it('a key spelled as a flag, and keys only the command line may set', async () => {
    const dashed = await file('{"--state": "/x"}', 'dashed.json')
    expect(await usageError(() => parseConfiguredCommand(['--config', dashed], SPEC, {}))).toContain(
      `unknown key "--state" in the config file ${dashed}; did you mean 'state'?`,
    )
    const proto = await file('{"__proto__": "x"}', 'proto.json')
    expect(await usageError(() => parseConfiguredCommand(['--config', proto], SPEC, {}))).toContain(
      `unknown key "__proto__" in the config file ${proto}`,
    )
    const nested = await file('{"config": "/etc/other.json"}', 'nested.json')
    expect(await usageError(() => parseConfiguredCommand(['--config', nested], SPEC, {}))).toContain(
      `unknown key "config" in the config file ${nested}; --config is given on the command line only`,
    )
  })

  it.each([
    ['{"keepalive": 10}', 'keepalive in FILE must be a string like "10s", not the number 10'],
    ['{"max-peers": 5}', 'max-peers in FILE must be a string like "64", not the number 5'],
    ['{"state": ["/a"]}', 'state in FILE must be a string like "<dir>", not a list'],
    ['{"json": "yes"}', 'json in FILE must be true or false, not the string "yes"'],
    [
      '{"listen": [1]}',
      'listen in FILE must be a list of strings like ["<multiaddr>"] (or one string), not a list',
    ],
    ['{"listen": null}', 'listen in FILE must be a list of strings'],
  ])('a value of the wrong type: %s', async (text, expected) => {
    const path = await file(text)
    const message = await usageError(() => parseConfiguredCommand(['--config', path], SPEC, {}))
    expect(message).toContain(expected.replace('FILE', path))
  })

  it('bad JSON, with the file, line and column', async () => {
    const path = await file('{\n  "state": "/x",\n}\n')
    expect(await usageError(() => parseConfiguredCommand(['--config', path], SPEC, {}))).toMatch(
      new RegExp(`^the config file ${path} is not valid JSON: .*\\(line 3 column 1\\)`),
    )
    const cut = await file('{"state": ', 'cut.json')
    expect(await usageError(() => parseConfiguredCommand(['--config', cut], SPEC, {}))).toContain(
      `the config file ${cut} is not valid JSON: Unexpected end of JSON input (the file ends at line 1)`,
    )
    const array = await file('["--state", "/x"]', 'array.json')
    expect(await usageError(() => parseConfiguredCommand(['--config', array], SPEC, {}))).toContain(
      `the config file ${array} must hold one JSON object of options`,
    )
  })

  it('a missing file, named with how it was given', async () => {
    const path = join(dir, 'absent.json')
    expect(await usageError(() => parseConfiguredCommand(['--config', path], SPEC, {}))).toBe(
      `the config file ${path} (from --config) does not exist; create it ({} will do) or leave --config out`,
    )
    expect(await usageError(() => parseConfiguredCommand([], SPEC, { FLEETMESH_CONFIG: path }))).toContain(
      `the config file ${path} (from FLEETMESH_CONFIG) does not exist`,
    )
  })

  it('a file over the size bound, also when it has no size to check (a FIFO)', async () => {
    const big = await file(`{"state": "${'x'.repeat(MAX_CONFIG_BYTES)}"}`)
    expect(await usageError(() => parseConfiguredCommand(['--config', big], SPEC, {}))).toContain(
      `the config file ${big} is larger than ${MAX_CONFIG_BYTES / 1024} KiB`,
    )
    const fifo = join(dir, 'fifo')
    execFileSync('mkfifo', [fifo])
    const writer = writeFile(fifo, `{"state": "${'x'.repeat(MAX_CONFIG_BYTES)}"}`).catch(() => {})
    expect(await usageError(() => parseConfiguredCommand(['--config', fifo], SPEC, {}))).toContain(
      'is larger than',
    )
    await writer
  })

  it('values are checked where they are used, naming the file key or the variable', async () => {
    const path = await file('{"state": "/x", "keepalive": "often", "observer-ports": ["4002", "99999"]}')
    const p: Parsed = await parseConfiguredCommand(['--config', path], SPEC, { FLEETMESH_MAX_PEERS: 'lots' })
    expect(() => duration(p, 'keepalive', 1)).toThrow(`keepalive in ${path} must be a duration like 90s`)
    expect(() => ports(p, 'observer-ports', [])).toThrow(
      `observer-ports in ${path}: "99999" is not a TCP port`,
    )
    expect(() => int(p, 'max-peers', 1, 1, 10)).toThrow('FLEETMESH_MAX_PEERS must be a whole number')
  })

  it('a variable that is not a boolean, and a required option from nowhere', async () => {
    expect(await usageError(() => parseConfiguredCommand([], SPEC, { FLEETMESH_JSON: 'maybe' }))).toBe(
      'FLEETMESH_JSON must be 1 or 0 (true or false) to set --json, not "maybe"',
    )
    expect(await usageError(() => parseConfiguredCommand([], SPEC, {}))).toContain(
      '--state is required: give it on the command line, as FLEETMESH_STATE or as "state" in the --config file',
    )
  })

  it('only specs made with configurable() take a config', async () => {
    const plain = { ...SPEC, options: { state: SPEC.options.state! } }
    await expect(parseConfiguredCommand([], plain, {})).rejects.toThrow(TypeError)
  })
})
