// Bad input to the admin CLI fails at once, naming the flag or the file, and
// the process exits by itself. An unparsable coordinator address used to be
// parsed after the admin's libp2p host had started, so the command printed
// its error and then never exited: here a hung command fails through
// runCli's own timeout, which kills it (no timing is asserted).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { fileSize } from '../../lib/index.ts'
import { makeArchive } from '../../testkit/archives.ts'
import { FleetDirectory, initArgs } from '../../testkit/fleetmesh.ts'
import { runCli, TestFleet } from '../../testkit/harness.ts'

/** Long enough for any healthy run on a loaded machine; a hung command is killed after it. */
const RUN_MS = 60_000
const TEST_MS = 180_000

describe('admin commands with a bad coordinator address', () => {
  let fleet: FleetDirectory
  beforeAll(async () => {
    fleet = new FleetDirectory(await mkdtemp(join(tmpdir(), 'fm-bad-')))
    const args = initArgs({
      fleet: 't',
      coordState: fleet.coordState,
      coordinatorAddrs: ['/ip4/127.0.0.1/tcp/1'],
    })
    const r = await runCli(['--home', fleet.home, ...args])
    expect(r.code, r.stderr).toBe(0)
  })
  afterAll(async () => {
    await rm(fleet.dir, { recursive: true, force: true })
  })

  for (const addr of ['garbage', 'tcp/99999', '/ip4/127.0.0.1/tcp/99999', '/ip4/127.0.0.1/tcp/abc']) {
    it(
      `--coordinator ${addr}: exits by itself, naming the flag`,
      async () => {
        const r = await runCli(['--home', fleet.home, 'machines', '--coordinator', addr], {}, RUN_MS)
        expect(r.code).toBe(2)
        expect(r.stderr).toContain(`--coordinator "${addr}" is not a valid address`)
        expect(r.stderr).toContain('expected /ip4|/ip6|/dns4|/dns6|/dns/<host>/tcp/<port 1-65535>')
      },
      TEST_MS,
    )
  }

  describe('in fleet.json', () => {
    let original: string
    beforeEach(async () => {
      original = await readFile(join(fleet.home, 'fleet.json'), 'utf8')
    })
    afterEach(async () => {
      await writeFile(join(fleet.home, 'fleet.json'), original)
    })

    async function editFleet(edit: (f: { coordinator: { peerId: string; addrs: string[] } }) => void) {
      const f = JSON.parse(original) as { coordinator: { peerId: string; addrs: string[] } }
      edit(f)
      await writeFile(join(fleet.home, 'fleet.json'), JSON.stringify(f))
    }

    it(
      'a bad address exits by itself, naming the file, the entry and the value',
      async () => {
        await editFleet((f) => {
          f.coordinator.addrs.push('/ip4/127.0.0.1/tcp/99999')
        })
        const r = await runCli(['--home', fleet.home, 'machines'], {}, RUN_MS)
        expect(r.code).toBe(1)
        expect(r.stderr).toContain(
          `${join(fleet.home, 'fleet.json')} coordinator.addrs[1] "/ip4/127.0.0.1/tcp/99999" is not a valid address`,
        )
      },
      TEST_MS,
    )

    it(
      'a bad coordinator peer id exits by itself, naming the file',
      async () => {
        await editFleet((f) => {
          f.coordinator.peerId = 'not-a-peer-id'
        })
        const r = await runCli(['--home', fleet.home, 'machines'], {}, RUN_MS)
        expect(r.code).toBe(1)
        expect(r.stderr).toContain(`${join(fleet.home, 'fleet.json')} coordinator.peerId "not-a-peer-id"`)
      },
      TEST_MS,
    )
  })

  it(
    'init refuses a bad --coordinator-addr and writes nothing, and takes the relayed form the README shows',
    async () => {
      for (const addr of [
        '/ip4/999.1.1.1/tcp/1',
        '/ip4/203.0.113.7/tcp/notaport',
        '/ip4/203.0.113.7/tcp/0',
      ]) {
        const other = new FleetDirectory(join(fleet.dir, 'refused'))
        const args = initArgs({ fleet: 't', coordState: other.coordState, coordinatorAddrs: [addr] })
        const r = await runCli(['--home', other.home, ...args], {}, RUN_MS)
        expect(r.code, addr).toBe(2)
        expect(r.stderr).toContain(`--coordinator-addr "${addr}" is not a valid address`)
        expect(await fileSize(join(other.home, 'fleet.json'))).toBeUndefined()
      }
      const other = new FleetDirectory(join(fleet.dir, 'relayed'))
      const relayed =
        '/ip4/198.51.100.9/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit'
      const args = initArgs({ fleet: 't', coordState: other.coordState, coordinatorAddrs: [relayed] })
      const r = await runCli(['--home', other.home, ...args], {}, RUN_MS)
      expect(r.code, r.stderr).toBe(0)
    },
    TEST_MS,
  )

  it(
    'enroll refuses a --ttl outside 1m to 30d, saying the range, and takes one within it',
    async () => {
      for (const ttl of ['0s', '59s', '31d']) {
        const r = await runCli(['--home', fleet.home, 'enroll', 'edge-1', '--ttl', ttl], {}, RUN_MS)
        expect(r.code, ttl).toBe(2)
        expect(r.stderr).toContain(`--ttl must be from 1m to 30d, got "${ttl}"`)
        expect(r.stdout).not.toContain('fmtok1.')
      }
      const r = await runCli(['--home', fleet.home, 'enroll', 'edge-1', '--ttl', '30d', '--json'], {}, RUN_MS)
      expect(r.code, r.stderr).toBe(0)
      const { expiresAt } = JSON.parse(r.stdout) as { expiresAt: string }
      expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now())
    },
    TEST_MS,
  )
})

describe('deploy checks every option before uploading or signing', () => {
  let fleet: TestFleet
  beforeAll(async () => {
    fleet = await TestFleet.create()
    await fleet.startCoordinator()
  })
  afterAll(async () => {
    await fleet.stop()
  })

  const bad: [flags: string[], message: string][] = [
    [['--health-retries', 'abc'], '--health-retries must be a whole number from 0 to 100, got "abc"'],
    [['--health-retries', '101'], '--health-retries must be a whole number from 0 to 100, got "101"'],
    [['--health-timeout', '2h'], '--health-timeout must be from 100ms to 1h, got "2h"'],
    [['--confirm-timeout', '0s'], '--confirm-timeout must be from 1s to 24h, got "0s"'],
    [['--expires', '0s'], '--expires must be from 1s to 365d, got "0s"'],
    [['--timeout', '0s'], '--timeout must be from 1s to 30d, got "0s"'],
    [
      ['--url', 'ftp://mirror.example/app.tar.gz'],
      '--url "ftp://mirror.example/app.tar.gz" is not an http://',
    ],
  ]

  it(
    'a bad value fails naming its flag, and nothing reaches the coordinator',
    async () => {
      const archive = await makeArchive(fleet.dir, { version: 'v1' })
      const deploy = (flags: string[]) =>
        fleet.cli(
          [
            'deploy',
            archive,
            '--to',
            'tag:lab',
            '--allow-future-machines',
            '--no-watch',
            '--health-check',
            'true',
            ...flags,
          ],
          RUN_MS,
        )
      for (const [flags, message] of bad) {
        const r = await deploy(flags)
        expect(r.code, flags.join(' ')).toBe(2)
        expect(r.stderr).toContain(message)
        expect(r.stderr).not.toContain('uploaded')
      }
      const generation = await deploy(['--generation', 'bad name'])
      expect(generation.code).toBe(2)
      expect(generation.stderr).toContain('--generation "bad name"')
      // the first good deploy uploads the archive: none of the refused ones did
      const good = await deploy([])
      expect(good.code, good.stderr).toBe(0)
      expect(good.stderr).toContain('uploaded')
      expect(good.stderr).not.toContain('archive already on the coordinator')
      const audit = await fleet.json<{ records: { action: string }[] }>(['audit'])
      expect(audit.records.filter((x) => x.action === 'submit-manifest')).toHaveLength(1)
    },
    TEST_MS,
  )
})
