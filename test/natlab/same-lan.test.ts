// Peers behind the same NAT: an agent and a coordinator on one eim router's LAN,
// the coordinator reachable from outside only through the relay, and the router
// without hairpin NAT (a connection to its own public address from the LAN ends
// at the router, which answers RST). A punch to the shared external endpoint
// cannot work there; the LAN candidates of the punch offer (the coordinator's LAN
// listen address) must. The agent's control link has to end on a direct LAN
// connection, moved from the relayed one without a reconnect, every trial. The
// coordinator announces only its relay address, as an operator does for one
// behind NAT: without the offer's LAN candidates nothing tells the agent where it is.
// A second agent host sits on another subnet of the same site (a /24 the router
// also routes): the coordinator's LAN address is then off the agent's own
// subnet, which the dial scope refuses unless LAN discovery (the offer of a peer
// behind the same public address) names it. Last, the router hairpins (NAT
// loopback to the coordinator's host, as a port forward does): the LAN stays the
// way taken.
// Every wait is on an event a process printed.

import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LabFleet, type LabRelay, startLabRelay } from '../../testkit/natlab/fleet-lab.ts'
import { canRunLab, createLab, type Lab, type LabHost } from '../../testkit/natlab/lab.ts'
import type { LabRouter } from '../../testkit/natlab/topology.ts'

const check = canRunLab()
if (!check.ok) console.warn(`same-LAN lab test skipped: ${check.reason}`)

/** FLEETMESH_SAME_LAN_TRIALS lowers it where time is short; the goal is 20 of 20 */
const TRIALS = Number(process.env.FLEETMESH_SAME_LAN_TRIALS ?? 20)
/** The LAN stage (2 s) and, were it to fail, the public punch (5 s), with room */
const DIRECT_BOUND_MS = 20_000
/** A failing build stops early rather than spend the bound on every trial */
const MAX_FAILURES = 3
/** Trials from the other subnet, and through a hairpinning router: the same path, so fewer */
const OTHER_SUBNET_TRIALS = Math.min(TRIALS, 5)
const HAIRPIN_TRIALS = Math.min(TRIALS, 5)

describe.skipIf(!check.ok)('peers behind the same NAT', () => {
  let lab: Lab
  let relayDir: string
  let relay: LabRelay
  let fleet: LabFleet
  let coordHost: LabHost
  let agentHost: LabHost
  let otherSubnetHost: LabHost
  let home: LabRouter

  beforeAll(async () => {
    lab = createLab()
    const relayHost = lab.addPublicHost('relay')
    home = lab.addRouter('home', { behaviour: 'eim' })
    coordHost = lab.addPrivateHost('coord', home)
    agentHost = lab.addPrivateHost('agent', home)
    otherSubnetHost = lab.addPrivateHost('agent2', home, { subnet: home.lanPrefix.replace(/\.\d+$/, '.1') })
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

  /** What a server on port 5000 at `ip` says to `host` (a failed connection throws) */
  function fetch5000(host: LabHost, ip: string): string {
    return lab.exec(host, process.execPath, [
      '-e',
      `const s = require('node:net').connect(5000, '${ip}'); s.setTimeout(3000, () => process.exit(2)); s.on('data', (d) => process.stdout.write(d))`,
    ])
  }

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

  it('the lab router lets its LAN hosts reach each other, on one subnet and across two', async () => {
    const server = lab.spawn(coordHost, process.execPath, [
      '-e',
      `require('node:net').createServer((s) => s.end('lan')).listen(5000, '${coordHost.ip}', () => console.log('{"event":"listening"}'))`,
    ])
    await server.waitFor('listening', 10_000)
    const fetchFrom = (host: LabHost) => fetch5000(host, coordHost.ip)
    const got = fetchFrom(agentHost)
    const routed = fetchFrom(otherSubnetHost) // through the router, from the site's other subnet
    server.kill()
    expect(got).toBe('lan')
    expect(routed).toBe('lan')
  })

  /** Enrolls a fresh agent on `host` `trials` times: how many ended on a direct LAN connection without a reconnect */
  async function trialsFrom(host: LabHost, trials: number, prefix: string) {
    let direct = 0
    let tried = 0
    const failures: string[] = []
    for (let trial = 0; trial < trials && failures.length < MAX_FAILURES; trial++) {
      tried++
      const machine = `${prefix}-${trial}`
      const { proc, connected } = await fleet.enrollAgent(host, machine, [
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
    return { direct, tried, failures }
  }

  it(
    `the control link ends on a direct LAN connection, without a reconnect (${TRIALS} trials)`,
    async () => {
      const { direct, tried, failures } = await trialsFrom(agentHost, TRIALS, 'edge')
      console.log(
        `same-LAN peers, eim router without hairpin: direct over the LAN in ${direct}/${tried} trials`,
      )
      expect(failures).toEqual([])
      expect(direct).toBe(TRIALS)
    },
    60_000 + TRIALS * 30_000,
  )

  it(
    `from another subnet of the site, too: LAN discovery widens the dial scope (${OTHER_SUBNET_TRIALS} trials)`,
    async () => {
      // the coordinator is off this host's subnet, so only the router joins them
      expect(otherSubnetHost.ip.split('.').slice(0, 3)).not.toEqual(coordHost.ip.split('.').slice(0, 3))
      const { direct, tried, failures } = await trialsFrom(otherSubnetHost, OTHER_SUBNET_TRIALS, 'subnet')
      console.log(
        `same-site peers on two subnets behind one NAT: direct over the LAN in ${direct}/${tried} trials`,
      )
      expect(failures).toEqual([])
      expect(direct).toBe(OTHER_SUBNET_TRIALS)
    },
    60_000 + OTHER_SUBNET_TRIALS * 30_000,
  )

  it(
    `through a router that hairpins, the LAN is still the way taken (${HAIRPIN_TRIALS} trials)`,
    async () => {
      lab.hairpin(home, coordHost, true)
      try {
        const server = lab.spawn(coordHost, process.execPath, [
          '-e',
          `require('node:net').createServer((s) => s.end('hairpin')).listen(5000, '${coordHost.ip}', () => console.log('{"event":"listening"}'))`,
        ])
        await server.waitFor('listening', 10_000)
        const looped = fetch5000(agentHost, home.publicIp) // the router's own public address, from its LAN
        server.kill()
        expect(looped).toBe('hairpin')
        const { direct, tried, failures } = await trialsFrom(agentHost, HAIRPIN_TRIALS, 'hairpin')
        console.log(
          `same-LAN peers, eim router with hairpin: direct over the LAN in ${direct}/${tried} trials`,
        )
        expect(failures).toEqual([])
        expect(direct).toBe(HAIRPIN_TRIALS)
      } finally {
        lab.hairpin(home, coordHost, false)
      }
    },
    60_000 + HAIRPIN_TRIALS * 30_000,
  )
})
