// The daemons refuse a bad address before they lock their state or start a
// host, with an error that names the flag (or the file, or the token) and the
// value, where they used to fail inside libp2p with "Value must be an
// integer" or "Invalid IPv4 address", naming nothing.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadAdminHome } from '../../admin/home.ts'
import { issueToken } from '../../keys/index.ts'
import { COORDINATOR_CONFIG_FILE } from '../../protocol/index.ts'
import { FleetDirectory, initArgs } from '../../testkit/fleetmesh.ts'
import { runCli } from '../../testkit/harness.ts'

/** A daemon that does not refuse starts and runs until killed: runCli's timeout ends it. */
const RUN_MS = 60_000
const TEST_MS = 120_000
const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'

let fleet: FleetDirectory
beforeAll(async () => {
  fleet = new FleetDirectory(await mkdtemp(join(tmpdir(), 'fm-addr-')))
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

async function refused(args: string[], message: string): Promise<void> {
  const r = await runCli(args, {}, RUN_MS)
  expect(r.code, r.stderr).toBe(2)
  expect(r.stderr).toContain(message)
}

describe('daemon address flags', () => {
  it(
    'coordinator --listen, --announce, --bootstrap and --reserve-on',
    async () => {
      const coordinator = ['coordinator', '--state', fleet.coordState]
      await refused(
        [...coordinator, '--listen', '/ip4/127.0.0.1/tcp/99999'],
        '--listen "/ip4/127.0.0.1/tcp/99999" is not a valid address: the port "99999" is not a number from 0 to 65535',
      )
      await refused(
        [...coordinator, '--listen', '/ip4/127.0.0.1/tcp/0', '--announce', '/ip4/999.0.0.1/tcp/4001'],
        '--announce "/ip4/999.0.0.1/tcp/4001" is not a valid address',
      )
      await refused(
        [...coordinator, '--listen', '/ip4/127.0.0.1/tcp/0', '--reserve-on', '/ip4/127.0.0.1/tcp/4001'],
        '--reserve-on "/ip4/127.0.0.1/tcp/4001" is not a valid address: it must end in /p2p/<peer id>',
      )
      await refused(
        [
          ...coordinator,
          '--listen',
          '/ip4/127.0.0.1/tcp/0',
          '--bootstrap',
          `/ip4/127.0.0.1/tcp/abc/p2p/${PEER}`,
        ],
        `--bootstrap "/ip4/127.0.0.1/tcp/abc/p2p/${PEER}" is not a valid address`,
      )
    },
    TEST_MS,
  )

  it(
    'coordinator without --listen: a bad address in coordinator.json names the file',
    async () => {
      const file = join(fleet.coordState, COORDINATOR_CONFIG_FILE)
      const original = await readFile(file, 'utf8')
      try {
        await writeFile(
          file,
          JSON.stringify({ ...JSON.parse(original), listen: ['/ip4/127.0.0.1/tcp/99999'] }),
        )
        await refused(
          ['coordinator', '--state', fleet.coordState],
          `${file} listen[0] "/ip4/127.0.0.1/tcp/99999" is not a valid address`,
        )
      } finally {
        await writeFile(file, original)
      }
    },
    TEST_MS,
  )

  it(
    'relay --listen, --announce and --bootstrap',
    async () => {
      const relay = ['relay', '--state', join(fleet.dir, 'relay'), '--observer-ports', 'none']
      await refused([...relay, '--listen', 'garbage'], '--listen "garbage" is not a valid address')
      await refused(
        [...relay, '--listen', '/ip4/127.0.0.1/tcp/0', '--announce', '/ip4/1.2.3.4/tcp/0'],
        '--announce "/ip4/1.2.3.4/tcp/0" is not a valid address: the port "0" is not a number from 1 to 65535',
      )
      await refused(
        [...relay, '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', '/ip4/127.0.0.1/tcp/4001'],
        '--bootstrap "/ip4/127.0.0.1/tcp/4001" is not a valid address: it must end in /p2p/<peer id>',
      )
    },
    TEST_MS,
  )

  it(
    "agent --coordinator-addr, --listen, and the token's coordinator addresses",
    async () => {
      const me = await loadAdminHome(fleet.home)
      const tokenWith = (addrs: string[], machine: string) =>
        issueToken(me.key, me.chain, {
          fleetRoot: me.fleetRoot,
          coordinator: { peerId: me.fleet.coordinator.peerId, addrs },
          machine,
          tags: [],
          ttlMs: 3_600_000,
        })
      const agent = (machine: string) => ['agent', '--state', fleet.agentState(machine), '--json']
      await refused(
        [
          ...agent('a1'),
          '--token',
          tokenWith(['/ip4/127.0.0.1/tcp/1'], 'a1'),
          '--coordinator-addr',
          '/ip4/1.2.3.4/tcp/abc',
        ],
        '--coordinator-addr "/ip4/1.2.3.4/tcp/abc" is not a valid address',
      )
      await refused(
        [
          ...agent('a2'),
          '--token',
          tokenWith(['/ip4/127.0.0.1/tcp/1'], 'a2'),
          '--listen',
          '/ip4/127.0.0.1/tcp/70000',
        ],
        '--listen "/ip4/127.0.0.1/tcp/70000" is not a valid address',
      )
      await refused(
        [...agent('a3'), '--token', tokenWith(['/ip4/127.0.0.1/tcp/99999'], 'a3')],
        `the token's coordinator address "/ip4/127.0.0.1/tcp/99999" is not a valid address`,
      )
    },
    TEST_MS,
  )
})
