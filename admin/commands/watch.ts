/** `fleetmesh watch`: follow a rollout (or the whole fleet) live; `deploy` uses the same loop. */
import {
  backoffDelay,
  type CommandSpec,
  duration,
  errorMessage,
  flag,
  parseCommand,
  sleep,
  str,
  UsageError,
} from '../../lib/index.ts'
import type { MachineView, UpdateState, WatchEvent } from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError, type AdminWatch } from '../client.ts'
import { machineLine, machinesTable } from '../format.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

export const WATCH_COMMAND: CommandSpec = {
  name: 'watch',
  summary: 'Follow a rollout (or, without --rollout, the whole fleet) live.',
  usage: 'fleetmesh watch [--rollout <id>] [--timeout <duration>] [--coordinator <multiaddr>]... [--json]',
  options: {
    ...REMOTE_OPTIONS,
    rollout: {
      type: 'string',
      value: '<id>',
      description: 'the 32-hex-digit rollout id deploy printed; exits once every machine settles',
    },
    timeout: {
      type: 'string',
      value: '<duration>',
      description: 'give up after this long',
      default: '15m with --rollout, no limit without',
    },
  },
  examples: ['fleetmesh watch --rollout 3f2a9c0e1b7d4e6f8a5b2c1d0e9f8a7b --timeout 30m'],
}

const TERMINAL: readonly UpdateState[] = ['committed', 'rolled-back', 'failed', 'refused']

/**
 * The longest single wait for the next event. Node's timers overflow above
 * 2^31-1 ms (about 24.8 days) and throw ERR_OUT_OF_RANGE, so a longer --timeout
 * is waited out in slices of at most this.
 */
export const MAX_WAIT_MS = 2 ** 31 - 1

/** Retry pace after the watch stream is lost (a coordinator restart takes seconds). */
const RECONNECT_BACKOFF = { initialMs: 500, maxMs: 10_000 }

/** Errors that end a watch stream because the link went away, not because the coordinator refused. */
const LINK_ERRORS = new Set([
  'UnexpectedEndOfStreamError',
  'StreamResetError',
  'StreamAbortedError',
  'StreamStateError',
  'StreamClosedError',
  'ConnectionClosedError',
])

function linkLost(err: unknown): boolean {
  if (err instanceof AdminRequestError) return err.code === 'unreachable'
  return err instanceof Error && LINK_ERRORS.has(err.name)
}

/**
 * Opens the watch again after the link to the coordinator was lost, with
 * backoff, saying so on stderr; null when `deadline` passes first.
 */
async function reconnect(
  client: Pick<AdminClient, 'watch'>,
  rolloutId: string | null,
  cause: unknown,
  deadline: number,
): Promise<AdminWatch | null> {
  let reason = errorMessage(cause)
  for (let attempt = 0; ; attempt++) {
    const delay = Math.min(backoffDelay(attempt, RECONNECT_BACKOFF), deadline - Date.now())
    if (delay <= 0) return null
    process.stderr.write(
      `lost the coordinator (${reason}); reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt + 1})\n`,
    )
    await sleep(delay)
    try {
      const watch = await client.watch(rolloutId)
      process.stderr.write('reconnected to the coordinator\n')
      return watch
    } catch (err) {
      if (!linkLost(err)) throw err
      reason = errorMessage(err)
    }
  }
}

function settled(m: MachineView, rolloutId: string): boolean {
  if (m.desiredRolloutId !== null && m.desiredRolloutId !== rolloutId) return true // superseded by a newer rollout
  return m.rolloutId === rolloutId && m.state !== null && TERMINAL.includes(m.state)
}

/**
 * Streams progress until every targeted machine settles; returns the exit code:
 * 0 all committed, 1 some did not, 2 timed out. A `timeoutMs` of null waits
 * without a deadline (`watch` of the whole fleet never settles by itself).
 * When the link to the coordinator is lost, it reconnects with backoff.
 */
export async function watchRollout(
  client: Pick<AdminClient, 'watch'>,
  rolloutId: string | null,
  expected: string[],
  timeoutMs: number | null,
  json: boolean,
): Promise<number> {
  let watch = await client.watch(rolloutId)
  const view = new Map<string, MachineView>()
  const deadline = timeoutMs === null ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs
  const emit = (obj: unknown, human: string) => {
    if (json) process.stdout.write(`${JSON.stringify(obj)}\n`)
    else process.stdout.write(`${human}\n`)
  }
  try {
    const targets = new Set(expected)
    while (true) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        emit(
          { type: 'timeout', rolloutId },
          `timed out after ${Math.round((timeoutMs ?? 0) / 1000)} s; machines not settled: ${[...targets]
            .filter((n) => {
              const m = view.get(n)
              return !(m && rolloutId && settled(m, rolloutId))
            })
            .join(', ')}`,
        )
        return 2
      }
      let event: WatchEvent
      try {
        event = await watch.next(Math.min(remaining, MAX_WAIT_MS))
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') continue
        if (!linkLost(err)) throw err
        // The coordinator went away (a restart, a network cut): pick the stream up again; the
        // new stream starts with a fresh snapshot, so nothing missed meanwhile stays unseen.
        watch.close()
        watch = (await reconnect(client, rolloutId, err, deadline)) ?? watch
        continue
      }
      if (event.type === 'snapshot') {
        for (const m of event.machines) {
          view.set(m.name, m)
          if (rolloutId !== null && expected.length === 0 && m.desiredRolloutId === rolloutId)
            targets.add(m.name)
        }
        if (!json)
          for (const n of targets) {
            const m = view.get(n)
            if (m) process.stdout.write(`${machineLine(m)}\n`)
          }
      } else if (event.type === 'manifest') {
        if (rolloutId === null) emit(event, `new rollout ${event.rolloutId} → ${event.machines.join(', ')}`)
        continue
      } else {
        const before = view.get(event.machine.name)
        view.set(event.machine.name, event.machine)
        if (rolloutId === null || targets.has(event.machine.name)) {
          if (
            before?.state !== event.machine.state ||
            before?.online !== event.machine.online ||
            event.machine.progress
          ) {
            emit(
              { type: event.type, machine: event.machine },
              event.type === 'status'
                ? machineLine(event.machine)
                : `${event.machine.name.padEnd(20)} ${event.type}`,
            )
          }
        }
      }
      if (rolloutId !== null && targets.size > 0) {
        const all = [...targets].map((n) => view.get(n))
        if (all.every((m) => m !== undefined && settled(m, rolloutId))) {
          const machinesNow = all as MachineView[]
          const failed = machinesNow.filter(
            (m) => m.state !== 'committed' && m.desiredRolloutId === rolloutId,
          )
          emit(
            { type: 'settled', rolloutId, machines: machinesNow },
            `\nrollout ${rolloutId} settled: ${machinesNow.length - failed.length} committed, ${failed.length} not\n\n${machinesTable(machinesNow)}`,
          )
          return failed.length === 0 ? 0 : 1
        }
      }
    }
  } finally {
    watch.close()
  }
}

export async function watch(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, WATCH_COMMAND)
  const rollout = str(p, 'rollout') ?? null
  if (rollout !== null && !/^[0-9a-f]{32}$/.test(rollout))
    throw new UsageError(`--rollout must be a 32-digit hex rollout id, got "${rollout}"`)
  return withClient(home, p, (c) =>
    watchRollout(
      c,
      rollout,
      [],
      str(p, 'timeout') === undefined && rollout === null ? null : duration(p, 'timeout', 15 * 60_000),
      flag(p, 'json'),
    ),
  )
}
