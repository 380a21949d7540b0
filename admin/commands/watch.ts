/**
 * `fleetmesh watch`: follow a rollout (or the whole fleet) live; `deploy` uses the same loop.
 *
 * A rollout watch waits for the machines the rollout targeted: those its
 * manifests name (a coordinator sends them before its snapshot), those whose
 * desired state is the rollout, and those deploy submitted it for. It ends as
 * soon as none is pending (admin/rollout-outcome.ts), so the watch of a
 * finished rollout ends with the first snapshot. When the link to the
 * coordinator is lost it says so, reconnects with backoff and carries on from
 * the fresh snapshot the new stream starts with.
 */
import {
  type CommandSpec,
  duration,
  flag,
  parseCommand,
  str,
  terminalWidth,
  UsageError,
} from '../../lib/index.ts'
import type { MachineView, WatchEvent } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError, type AdminWatch } from '../client.ts'
import { machineLine, machinesTable } from '../format.ts'
import {
  EXIT,
  exitCode,
  machineOutcome,
  type RolloutSummary,
  settledText,
  summarize,
  WATCH_EXIT_NOTES,
} from '../rollout-outcome.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'
import { authorityRefused, linkLost, linkReason, reopenWatch, sayReconnect } from '../watch-link.ts'
import { followWaves, MAX_WAIT_MS, peekWaves, replayed } from './rollout-follow.ts'

export const WATCH_COMMAND: CommandSpec = {
  name: 'watch',
  summary: 'Follow a rollout (or, without --rollout, the whole fleet) live.',
  usage: 'fleetmesh watch [--rollout <id>] [--timeout <duration>] [--coordinator <multiaddr>]... [--json]',
  options: {
    ...REMOTE_OPTIONS,
    rollout: {
      type: 'string',
      value: '<id>',
      description:
        'the 32-hex-digit rollout id deploy printed; exits once no machine is pending (at once if it is finished)',
    },
    timeout: {
      type: 'string',
      value: '<duration>',
      description: 'give up after this long',
      default: '15m with --rollout, no limit without',
    },
  },
  notes: WATCH_EXIT_NOTES,
  examples: ['fleetmesh watch --rollout 3f2a9c0e1b7d4e6f8a5b2c1d0e9f8a7b --timeout 30m'],
}

export { AUTHORITY_REFUSALS, authorityRefused, linkLost, linkReason } from '../watch-link.ts'
export { MAX_WAIT_MS }

const say = (line: string) => process.stderr.write(`${line}\n`)

/**
 * Where a rollout stands when the watch starts: `accepted` once the
 * coordinator said it stored it; `unconfirmed` when the link broke while it was
 * being submitted, so only the coordinator, once back, can tell.
 */
export type RolloutStanding = 'accepted' | 'unconfirmed'

/** What the operator is told when the link is lost, once per loss. */
function lostMessage(rolloutId: string | null, standing: RolloutStanding, cause: unknown): string {
  const gone = `the coordinator went away (${linkReason(cause)})`
  if (rolloutId === null) return `${gone}; reconnecting…`
  if (standing === 'unconfirmed')
    return `${gone} while rollout ${rolloutId} was being submitted; reconnecting to see whether it was stored…`
  return `${gone}; rollout ${rolloutId} is stored there and goes on; reconnecting… (fleetmesh watch --rollout ${rolloutId} follows it too)`
}

/** What `watch` says on stderr while it reconnects. */
const SAY_RECONNECT = sayReconnect(say)

export interface WatchOptions {
  /**
   * Set by deploy, which then also reconnects when the first open fails (a
   * plain `watch` fails at once if it never reached the coordinator);
   * 'unconfirmed' when it lost the coordinator during the submit.
   */
  standing?: RolloutStanding
  /** The error that broke the link before the watch started (with 'unconfirmed'). */
  lost?: unknown
}

/**
 * Streams progress until no targeted machine is pending and returns the exit
 * code (EXIT in rollout-outcome.ts). A `timeoutMs` of null waits without a
 * deadline (`watch` of the whole fleet never settles by itself).
 */
export async function watchRollout(
  client: Pick<AdminClient, 'watch'>,
  rolloutId: string | null,
  expected: string[],
  timeoutMs: number | null,
  json: boolean,
  options: WatchOptions = {},
): Promise<number> {
  const standing = options.standing ?? 'accepted'
  const width = json ? Number.POSITIVE_INFINITY : terminalWidth()
  const deadline = timeoutMs === null ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs
  const emit = (obj: unknown, human: string) =>
    process.stdout.write(json ? `${JSON.stringify(obj)}\n` : `${human}\n`)
  const targets = new Set(expected)
  const view = new Map<string, MachineView>()
  /** Until the (first or fresh) snapshot arrives, what is known may be incomplete. */
  let snapshotSeen = false
  let confirmed = standing === 'accepted'

  const timedOut = (): number => {
    const after = `timed out after ${Math.round((timeoutMs ?? 0) / 1000)} s`
    if (rolloutId === null) {
      emit({ type: 'timeout', rolloutId, pending: [] }, after)
      return EXIT.timedOut
    }
    const { pending } = summarize(rolloutId, targets, view)
    const follow = `fleetmesh watch --rollout ${rolloutId} follows it`
    const human = !snapshotSeen
      ? confirmed
        ? `${after} without reaching the coordinator; the rollout goes on (${follow})`
        : `${after} without reaching the coordinator; whether rollout ${rolloutId} was stored is unknown (${follow} if it was)`
      : `${after}; still pending: ${pending.join(', ')}; the rollout goes on (${follow})`
    emit({ type: 'timeout', rolloutId, pending }, human)
    return EXIT.timedOut
  }

  const open = async (): Promise<AdminWatch | null> => {
    let lost = options.lost
    if (lost === undefined)
      try {
        return await client.watch(rolloutId)
      } catch (err) {
        if (options.standing === undefined || !linkLost(err)) throw err
        lost = err
      }
    say(lostMessage(rolloutId, standing, lost))
    return reopenWatch(() => client.watch(rolloutId), deadline, SAY_RECONNECT)
  }
  let watch = await open()
  if (watch === null) return timedOut()
  try {
    while (true) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) return timedOut()
      let event: WatchEvent
      try {
        event = await watch.next(Math.min(remaining, MAX_WAIT_MS))
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') continue
        if (authorityRefused(err)) {
          if (json) emit({ type: 'refused', code: err.code, message: err.message }, '')
          throw new AdminRequestError(
            err.code,
            `the coordinator ended the watch: ${err.message}; ask an admin of the fleet for a new certificate ("fleetmesh admin install <bundle>")`,
          )
        }
        if (!linkLost(err)) throw err
        // A new stream starts over (manifests, then a fresh snapshot), so nothing missed stays unseen.
        watch.close()
        snapshotSeen = false
        say(lostMessage(rolloutId, confirmed ? 'accepted' : 'unconfirmed', err))
        const again = await reopenWatch(() => client.watch(rolloutId), deadline, SAY_RECONNECT)
        if (again === null) return timedOut()
        watch = again
        continue
      }
      if (event.type === 'snapshot') {
        for (const m of event.machines) {
          view.set(m.name, m)
          if (rolloutId !== null && m.desiredRolloutId === rolloutId) targets.add(m.name)
        }
        snapshotSeen = true
        if (!json)
          for (const n of targets) {
            const m = view.get(n)
            if (m) process.stdout.write(`${machineLine(m, width)}\n`)
          }
      } else if (event.type === 'manifest') {
        if (rolloutId === null) emit(event, `new rollout ${event.rolloutId} → ${event.machines.join(', ')}`)
        else if (event.rolloutId === rolloutId) for (const n of event.machines) targets.add(n)
        else supersede(event, rolloutId, targets, view, emit)
      } else if (event.type === 'rollout') {
        // A rollout in waves: `watch` follows those with followWaves; its machines' events still come.
        continue
      } else {
        const before = view.get(event.machine.name)
        view.set(event.machine.name, event.machine)
        if (rolloutId !== null && event.machine.desiredRolloutId === rolloutId)
          targets.add(event.machine.name)
        if (rolloutId === null || targets.has(event.machine.name)) {
          const m = event.machine
          if (before?.state !== m.state || before?.online !== m.online || m.progress)
            emit(
              { type: event.type, machine: m },
              event.type === 'status' ? machineLine(m, width) : `${m.name.padEnd(20)} ${event.type}`,
            )
        }
      }
      if (rolloutId === null || !snapshotSeen) continue
      if (!confirmed) {
        if (targets.size === 0) {
          emit(
            { type: 'not-stored', rolloutId },
            `rollout ${rolloutId} is not on the coordinator: nothing was deployed; run the same deploy again`,
          )
          return EXIT.noMachines
        }
        confirmed = true
        say(`rollout ${rolloutId} is stored on the coordinator and goes on`)
      }
      if (targets.size === 0) {
        emit(
          { type: 'no-machines', rolloutId },
          `rollout ${rolloutId}: no machine you can see is part of it (is the id right? "fleetmesh machines --json" shows each machine's desiredRolloutId)`,
        )
        return EXIT.noMachines
      }
      const summary = summarize(rolloutId, targets, view)
      if (summary.pending.length === 0) return settled(summary, targets, view, emit, width)
    }
  } finally {
    watch.close()
  }
}

/** A newer rollout took over some of the watched machines: they will never finish this one. */
function supersede(
  event: Extract<WatchEvent, { type: 'manifest' }>,
  rolloutId: string,
  targets: ReadonlySet<string>,
  view: Map<string, MachineView>,
  emit: (obj: unknown, human: string) => void,
): void {
  for (const name of event.machines) {
    const m = view.get(name)
    if (!targets.has(name) || m === undefined || machineOutcome(m, rolloutId).supersededBy !== null) continue
    view.set(name, { ...m, desiredRolloutId: event.rolloutId, desiredManifestId: event.manifestId })
    emit(
      { type: 'superseded', machine: name, by: event.rolloutId },
      `${name.padEnd(20)} superseded by rollout ${event.rolloutId}`,
    )
  }
}

function settled(
  summary: RolloutSummary,
  targets: ReadonlySet<string>,
  view: ReadonlyMap<string, MachineView>,
  emit: (obj: unknown, human: string) => void,
  width: number,
): number {
  const machines = [...targets]
    .sort()
    .map((n) => view.get(n))
    .filter((m) => m !== undefined)
  emit(
    { type: 'settled', ...summary, machines },
    `\n${settledText(summary)}\n\n${machinesTable(machines, width)}`,
  )
  return exitCode(summary)
}

export async function watch(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, WATCH_COMMAND)
  const rollout = str(p, 'rollout') ?? null
  if (rollout !== null && !/^[0-9a-f]{32}$/.test(rollout))
    throw new UsageError(`--rollout must be a 32-digit hex rollout id, got "${rollout}"`)
  return withClient(home, p, async (c) => {
    const json = flag(p, 'json')
    if (rollout === null)
      return watchRollout(
        c,
        null,
        [],
        str(p, 'timeout') === undefined ? null : duration(p, 'timeout', 0),
        json,
      )
    const timeoutMs = duration(p, 'timeout', 15 * 60_000)
    const started = Date.now()
    // The coordinator says on the stream whether this is a rollout in waves (its view comes before the
    // snapshot); one is followed wave by wave, any other machine by machine, on the same stream.
    const opened = await peekWaves(c, rollout, timeoutMs)
    if (opened.waves)
      return followWaves(c, rollout, timeoutMs - (Date.now() - started), json, json ? () => {} : say, opened)
    let first: AdminWatch | undefined = replayed(opened)
    const again = {
      watch: async (id: string | null) => {
        const w = first ?? (await c.watch(id))
        first = undefined
        return w
      },
    }
    return watchRollout(again, rollout, [], timeoutMs - (Date.now() - started), json)
  })
}
