/** `fleetmesh watch`: follow a rollout (or the whole fleet) live; `deploy` uses the same loop. */
import { duration, flag, parseCommand, str, UsageError } from '../../lib/index.ts'
import type { MachineView, UpdateState, WatchEvent } from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { machineLine, machinesTable } from '../format.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

const TERMINAL: readonly UpdateState[] = ['committed', 'rolled-back', 'failed', 'refused']

function settled(m: MachineView, rolloutId: string): boolean {
  if (m.desiredRolloutId !== null && m.desiredRolloutId !== rolloutId) return true // superseded by a newer rollout
  return m.rolloutId === rolloutId && m.state !== null && TERMINAL.includes(m.state)
}

/**
 * Streams progress until every targeted machine settles; returns the exit code:
 * 0 all committed, 1 some did not, 2 timed out.
 */
export async function watchRollout(
  client: AdminClient,
  rolloutId: string | null,
  expected: string[],
  timeoutMs: number,
  json: boolean,
): Promise<number> {
  const watch = await client.watch(rolloutId)
  const view = new Map<string, MachineView>()
  const deadline = Date.now() + timeoutMs
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
          `timed out after ${Math.round(timeoutMs / 1000)} s; machines not settled: ${[...targets]
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
        event = await watch.next(remaining)
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') continue
        throw err
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
  const p = parseCommand(
    argv,
    { ...REMOTE_OPTIONS, rollout: { type: 'string' }, timeout: { type: 'string' } },
    'fleetmesh watch [--rollout <id>] [--timeout 15m] [--json]',
  )
  const rollout = str(p, 'rollout') ?? null
  if (rollout !== null && !/^[0-9a-f]{32}$/.test(rollout))
    throw new UsageError(`--rollout must be a 32-digit hex rollout id, got "${rollout}"`)
  return withClient(home, p, (c) =>
    watchRollout(
      c,
      rollout,
      [],
      duration(p, 'timeout', rollout === null ? 365 * 86_400_000 : 15 * 60_000),
      flag(p, 'json'),
    ),
  )
}
