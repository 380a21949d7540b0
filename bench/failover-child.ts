/**
 * One child process of the failover part of `npm run bench -- cluster`
 * (cluster.ts): runs a share of the agents, each with the agent's own control
 * link and failover (agent/link.ts, agent/failover.ts). Each enrolls through
 * coordinator A, takes the signed list of both coordinators from it and keeps
 * that list in a state directory of its own. After A is killed, the child
 * reports when each of its agents saw the link go and when it said hello to B.
 * Times are absolute (performance.timeOrigin + now), so the parent compares
 * them with the moment of its kill.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { loadAdminHome } from '../admin/home.ts'
import { Failover } from '../agent/failover.ts'
import { CoordinatorLink } from '../agent/link.ts'
import type { FleetHost } from '../net/index.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { FleetDirectory } from '../testkit/fleetmesh.ts'
import type { ShardCommand, ShardReply } from './fleet-shards.ts'

interface FailoverAgent {
  host: FleetHost
  link: CoordinatorLink
  failover: Failover
}

const agents: FailoverAgent[] = []
/** When each agent said hello to B, and when it saw its link to A go */
const movedAt: number[] = []
const lostAt: number[] = []
/** Why tries failed between the loss and the move, by reason (its first words), with counts */
const failures = new Map<string, number>()
let allMoved: () => void = () => {}
const moved = new Promise<void>((resolve) => {
  allMoved = resolve
})
/** Agents holding their standby link to B (agent/standby.ts), when they run one */
let standing = 0
let allStanding: () => void = () => {}
const standingAll = new Promise<void>((resolve) => {
  allStanding = resolve
})

const now = () => performance.timeOrigin + performance.now()
const reply = (m: ShardReply): void => {
  process.send?.(m)
}

/** `count` agents named `<prefix>-NNNN`, enrolled and linked to A with the list in hand, 20 at a time. */
async function start(
  dir: string,
  count: number,
  prefix: string,
  movedTo: string,
  standby: boolean,
): Promise<void> {
  const fleetDir = new FleetDirectory(dir)
  const home = await loadAdminHome(fleetDir.home)
  const fleet = { fleetRoot: home.fleetRoot, fleetId: home.fleet.fleetId }
  const batch = 20
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async (_, j) => {
        const name = `${prefix}-${String(i + j).padStart(4, '0')}`
        const stateDir = join(dir, 'bench-agents', name)
        await mkdir(stateDir, { recursive: true })
        const { host } = await enrolledHost(fleetDir, name, ['bench'], stateDir)
        let listed: () => void = () => {}
        let standingAlready = false
        const gotList = new Promise<void>((resolve) => {
          listed = resolve
        })
        const failover = await Failover.open({
          stateDir,
          fleet,
          enrolled: home.fleet.coordinator,
          finderFor: () => undefined,
          allow: () => {},
          emit: (event, fields) => {
            if (event === 'coordinators') listed()
            // each agent once: one that holds, loses and holds again is not two
            if (event !== 'standby' || fields.held !== true || fields.peerId !== movedTo || standingAlready)
              return
            standingAlready = true
            if (++standing === count) allStanding()
          },
          ...(standby ? { standby: { host } } : {}),
        })
        let lost = false
        /** Set once the agent is on A with the list: only a later loss is the one measured */
        let gotListed = false
        const link = new CoordinatorLink({
          host,
          coordinator: failover.current().peer,
          coordinatorAddrs: failover.current().addrs,
          machine: name,
          keepaliveMs: 30_000,
          deadAfterMs: 600_000,
          queue: { pending: async () => [], ack: async () => {} },
          onManifest: () => {},
          coordinators: failover,
          onCoordinators: failover.receive,
          onState: (state) => {
            if (!state.connected && gotListed) {
              if (!lost) lostAt.push(now())
              else if (state.error !== undefined) {
                const reason = state.error.replace(/[0-9a-zA-Z]{40,}/g, '…').slice(0, 100)
                failures.set(reason, (failures.get(reason) ?? 0) + 1)
              }
              lost = true
            }
            if (!state.connected || failover.peer().toString() !== movedTo) return
            movedAt.push(now())
            if (movedAt.length === count) allMoved()
          },
        })
        agents.push({ host, link, failover })
        const connected = link.whenConnected()
        link.start()
        await Promise.all([connected, gotList])
        gotListed = true
      }),
    )
  }
}

async function handle(m: ShardCommand): Promise<void> {
  switch (m.op) {
    case 'failover-start':
      await start(m.dir, m.count, m.prefix, m.movedTo, m.standby)
      return reply({ op: 'started' })
    case 'failover-standby': {
      // every agent's standby link to B held, or as many as are when the parent's patience ends
      const timer = new Promise<void>((resolve) => setTimeout(resolve, m.timeoutMs).unref())
      await Promise.race([standingAll, timer])
      return reply({ op: 'standing', held: standing })
    }
    case 'failover-wait': {
      // all of this child's agents on B, or what there is when the parent's patience ends
      const timer = new Promise<void>((resolve) => setTimeout(resolve, m.timeoutMs).unref())
      await Promise.race([moved, timer])
      return reply({ op: 'moved', at: [...movedAt], lost: [...lostAt], failures: [...failures] })
    }
    case 'stop':
      await Promise.all(
        agents.map(async ({ link, failover, host }) => {
          await link.stop()
          await failover.stop()
          await host.stop()
        }),
      )
      reply({ op: 'stopped' })
      process.disconnect?.()
      return
    default:
      throw new Error(`failover agent process: unexpected command ${m.op}`)
  }
}

// The bench went away (Ctrl-C, a crash): its agents go with it.
process.on('disconnect', () => process.exit(0))
process.on('message', (m: ShardCommand) => {
  handle(m).catch((err: unknown) => reply({ op: 'error', message: String((err as Error)?.stack ?? err) }))
})
