// Peers behind the same NAT: an agent and a coordinator on one eim router's LAN,
// the coordinator reachable from outside only through the relay, and the router
// without hairpin NAT (a connection to its own public address from the LAN ends
// at the router, which answers RST). A punch to the shared external endpoint
// cannot work there; the LAN candidates of the punch offer (the coordinator's LAN
// listen address) must. The agent's control link has to end on a direct LAN
// connection, moved from the relayed one without a reconnect, every trial. The
// coordinator announces only its relay address, as an operator does for one
// behind NAT: without the offer's LAN candidates nothing tells the agent where it is.
// Every wait is on an event a process printed.

import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LabFleet, type LabRelay, startLabRelay } from '../../testkit/natlab/fleet-lab.ts'
import { canRunLab, createLab, type Lab, type LabHost } from '../../testkit/natlab/lab.ts'

const check = canRunLab()
if (!check.ok) console.warn(`same-LAN lab test skipped: ${check.reason}`)

/** FLEETMESH_SAME_LAN_TRIALS lowers it where time is short; the goal is 20 of 20 */
const TRIALS = Number(process.env.FLEETMESH_SAME_LAN_TRIALS ?? 20)
/** The LAN stage (2 s) and, were it to fail, the public punch (5 s), with room */
const DIRECT_BOUND_MS = 20_000
/** A failing build stops early rather than spend the bound on every trial */
const MAX_FAILURES = 3

describe.skipIf(!check.ok)('peers behind the same NAT', () => {
  let lab: Lab
  let relayDir: string
  let relay: LabRelay
  let fleet: LabFleet
  let coordHost: LabHost
  let agentHost: LabHost

  beforeAll(async () => {
    lab = createLab()
    const relayHost = lab.addPublicHost('relay')
    const home = lab.addRouter('home', { behaviour: 'eim' })
    coordHost = lab.addPrivateHost('coord', home)
    agentHost = lab.addPrivateHost('agent', home)
    relayDir = await mkdtemp(join(tmpdir(), 'fm-lab-relay-'))
    relay = await startLabRelay(lab, relayHost, relayDir)
    fleet = await LabFleet.create(lab, {
      name: 'lan',
      admin: lab.addPublicHost('admin'),
      coordinator: coordHost,
      // from outside only through the relay: the tokens name no other address
      coordinatorAddrs: [`${relay.addr}/p2p-circuit`],
    })
    await fleet.startRelayedCoordinator(relay, [
      // what it tells peers (identify, the DHT) is its relay address only: its LAN address
      // reaches an agent on the same LAN only in the punch offer
      '--announce',
      `${relay.addr}/p2p-circuit`,
    ])
  }, 90_000)

  /** What the agent's hole-punching service last recorded about the coordinator, for a failure's message */
  function punchRecord(machine: string): string {
    try {
      const runtime = JSON.parse(readFileSync(join(fleet.agentState(machine), 'runtime.json'), 'utf8'))
      return `last punch attempt: ${JSON.stringify(runtime.details?.holePunch?.attempts?.[fleet.coordinatorPeerId])}`
    } catch (err) {
      return `no punch record (${String(err)})`
    }
  }

  afterAll(async () => {
    lab?.destroy()
    await Promise.all([fleet?.remove(), relayDir && rm(relayDir, { recursive: true, force: true })])
  })

  it('the lab router lets its LAN hosts reach each other (bridged frames cross its FORWARD chain)', async () => {
    const server = lab.spawn(coordHost, process.execPath, [
      '-e',
      `require('node:net').createServer((s) => s.end('lan')).listen(5000, '${coordHost.ip}', () => console.log('{"event":"listening"}'))`,
    ])
    await server.waitFor('listening', 10_000)
    const got = lab.exec(agentHost, process.execPath, [
      '-e',
      `const s = require('node:net').connect(5000, '${coordHost.ip}'); s.setTimeout(3000, () => process.exit(2)); s.on('data', (d) => process.stdout.write(d))`,
    ])
    server.kill()
    expect(got).toBe('lan')
  })

  it(
    `the control link ends on a direct LAN connection, without a reconnect (${TRIALS} trials)`,
    async () => {
      let direct = 0
      let tried = 0
      const failures: string[] = []
      for (let trial = 0; trial < TRIALS && failures.length < MAX_FAILURES; trial++) {
        tried++
        const machine = `edge-${trial}`
        const { proc, connected } = await fleet.enrollAgent(agentHost, machine, [
          '--bootstrap',
          relay.addr,
          '--observers',
          relay.observers,
        ])
        try {
          const onLan = (e: { event: string; path?: unknown; addr?: unknown }): boolean =>
            e.event === 'connected' && e.path === 'direct' && String(e.addr).includes(`/ip4/${coordHost.ip}/`)
          const ended = onLan(connected)
            ? connected
            : await proc.waitFor(onLan, DIRECT_BOUND_MS).catch(() => undefined)
          const reconnected = proc.events.some((e) => e.event === 'disconnected')
          if (ended !== undefined && !reconnected) direct++
          else
            failures.push(
              `${machine}: ${reconnected ? 'reconnected' : 'no direct LAN connection'}; ${punchRecord(machine)}`,
            )
        } finally {
          proc.kill('SIGTERM')
          await proc.exited
        }
      }
      console.log(
        `same-LAN peers, eim router without hairpin: direct over the LAN in ${direct}/${tried} trials`,
      )
      expect(failures).toEqual([])
      expect(direct).toBe(TRIALS)
    },
    60_000 + TRIALS * 30_000,
  )
})
