// The admin's Nix commands up to the point where they would reach the
// coordinator: `nix keygen`, and everything `deploy --nix/--nix-map` refuses
// before it connects, pushes or signs. Plus the text views of reboot and errors.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { deploy } from '../../admin/commands/deploy.ts'
import { describeMachineLog } from '../../admin/commands/log.ts'
import { nixKeygen } from '../../admin/commands/nix.ts'
import { machineLine, machinesTable } from '../../admin/format.ts'
import { loadAdminNixKey, paths, writeFleetFile } from '../../admin/home.ts'
import { NixPublicKey, PrivateKey } from '../../keys/index.ts'
import { UsageError } from '../../lib/index.ts'
import type { MachineView } from '../../protocol/index.ts'
import { sampleMachineView } from '../../testkit/fixtures.ts'

const PATH_A = '/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-nixos-system-a'

let home: string
let stdout: string[]
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'fm-admin-nix-'))
  await writeFleetFile(home, {
    fleetId: 'acme',
    fleetRoot: PrivateKey.generate().publicKey.toString(),
    coordinator: { peerId: PrivateKey.generate().toPeerId().toString(), addrs: ['/ip4/127.0.0.1/tcp/1'] },
  })
  stdout = []
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout.push(String(chunk))
    return true
  })
})
afterEach(async () => {
  vi.restoreAllMocks()
  await rm(home, { recursive: true, force: true })
})

describe('fleetmesh nix keygen', () => {
  it('creates <fleet>-cache-1 with a 0600 secret and a Nix-format public key, and prints it', async () => {
    await nixKeygen(['--json'], home)
    const printed = JSON.parse(stdout.join('')) as { name: string; publicKey: string }
    expect(printed.name).toBe('acme-cache-1')
    const files = paths(home)
    expect((await stat(files.nixSecretKey)).mode & 0o777).toBe(0o600)
    const pub = await readFile(files.nixPublicKey, 'utf8')
    expect(pub).toBe(printed.publicKey)
    expect(NixPublicKey.parse(pub).name).toBe('acme-cache-1')
    const key = await loadAdminNixKey(home)
    expect(key?.publicKey.toString()).toBe(pub)
  })

  it('refuses to overwrite without --force, and replaces with it', async () => {
    await nixKeygen([], home)
    const first = await readFile(paths(home).nixPublicKey, 'utf8')
    await expect(nixKeygen([], home)).rejects.toThrow(/already exists; pass --force/)
    await nixKeygen(['--force', '--name', 'acme-cache-2'], home)
    const second = await readFile(paths(home).nixPublicKey, 'utf8')
    expect(second).not.toBe(first)
    expect(second.startsWith('acme-cache-2:')).toBe(true)
  })

  it('refuses a key name Nix would not accept', async () => {
    await expect(nixKeygen(['--name', 'has space'], home)).rejects.toBeInstanceOf(UsageError)
  })
})

describe('deploy --nix / --nix-map refuse before connecting', () => {
  const refused = async (argv: string[], fragment: string | RegExp) => {
    const err = await deploy(argv, home).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(fragment)
    return err as Error
  }

  it('a malformed store path, first of all', async () => {
    const err = await refused(
      ['--nix', './result', '--mode', 'bogus'],
      /--nix "\.\/result" is not a store path/,
    )
    expect(err).toBeInstanceOf(UsageError)
  })

  it('bad flags and combinations', async () => {
    await refused(['--nix', PATH_A], /--to names no machines/)
    await refused(
      ['--nix', PATH_A, '--to', 'edge-1', '--mode', 'reboot'],
      /--mode must be one of switch, boot, test/,
    )
    await refused(['--nix', PATH_A, '--to', 'edge-1', '--substituter', 'ftp://x'], /not an http\(s\) URL/)
    await refused(['--nix', PATH_A, '--to', 'edge-1', '--trusted-key', 'nope'], /--trusted-key/)
    await refused(['--nix', PATH_A, '--nix-map', 'm.json', '--to', 'edge-1'], /either --nix or --nix-map/)
    await refused(['--nix', PATH_A, '--to', 'edge-1', '--url', 'http://x/a.tgz'], /--url is for archives/)
    await refused(['archive.tgz', '--to', 'edge-1', '--mode', 'boot'], /--mode goes with --nix or --nix-map/)
  })

  it('a bad --nix-map, naming the entry', async () => {
    const file = join(home, 'map.json')
    await writeFile(file, JSON.stringify({ 'edge-1': PATH_A, EDGE: PATH_A }))
    await refused(['--nix-map', file], /"EDGE" is not a machine name/)
    await writeFile(file, JSON.stringify({ 'edge-1': PATH_A }))
    await refused(['--nix-map', file, '--to', 'edge-1'], /drop --to/)
  })

  it('no Nix key and no --trusted-key: says to run nix keygen', async () => {
    const err = await refused(['--nix', PATH_A, '--to', 'edge-1'], /fleetmesh nix keygen/)
    expect(err.name).toBe('NixDeployError')
  })
})

describe('text views', () => {
  const view: MachineView = sampleMachineView({
    currentGeneration: 'nixos-system-a',
    desiredGeneration: 'nixos-system-a',
  })

  it('show a pending reboot where the coordinator reports one, and error reasons', () => {
    const rebooting = { ...view, rebootRequired: true }
    expect(machineLine(rebooting)).toContain('reboot required')
    expect(machineLine(view)).not.toContain('reboot')
    const failed: MachineView = {
      ...view,
      name: 'edge-2',
      state: 'rolled-back',
      error: { code: 'activation-failed', message: 'switch-to-configuration exited with status 1' },
    }
    const table = machinesTable([rebooting, failed])
    expect(table).toContain('committed (reboot required)')
    expect(table).toContain('rolled-back (activation-failed)')
    expect(table).toContain('edge-2: activation-failed: switch-to-configuration exited with status 1')
  })

  it('render a machine log', () => {
    const log = {
      machine: 'edge-1',
      state: 'committed' as const,
      manifestId: null,
      generation: 'nixos-system-a',
      error: null,
      log: 'switching to a (boot)\n',
      rebootRequired: true,
      reportedAt: null,
    }
    const text = describeMachineLog(log)
    expect(text).toContain('reboot required  yes')
    expect(text).toContain('switching to a (boot)')
    expect(describeMachineLog({ ...log, log: null, rebootRequired: false })).toContain(
      '(no update log reported)',
    )
  })
})
