/** `fleetmesh plan <fleet.json>`: what apply would change, per machine; exit 3 when there is anything. */
import { type CommandSpec, flag, output, parseCommand } from '../../lib/index.ts'
import { DEFAULT_FLEET_FILE, loadFleet } from '../fleet-command.ts'
import { formatPlan, planFleet } from '../fleet-plan.ts'
import { channelNixMaps } from '../nix-map.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'

/** Exit code of a plan with changes: 1 and 2 are errors and usage errors. */
export const PLAN_CHANGES_EXIT = 3

export const PLAN_COMMAND: CommandSpec = {
  name: 'plan',
  summary: 'Show what applying a fleet file would change: enrollments, tags, generations and waves.',
  usage: `fleetmesh plan [<fleet.json>] [--coordinator <multiaddr>]... [--json]`,
  options: REMOTE_OPTIONS,
  notes: [
    `The file defaults to ${DEFAULT_FLEET_FILE}; docs/fleet-file.md describes it.`,
    `exit codes: 0 nothing to do, ${PLAN_CHANGES_EXIT} changes to apply (for CI), 1 error, 2 bad usage or a bad file.`,
    'Machines this admin may not see count as not enrolled: plan with an admin that covers the file.',
    'Tags added and removed on enrolled machines are applied as tag records this admin signs (docs/fleet-file.md).',
  ],
  examples: ['fleetmesh plan fleet.json', 'fleetmesh plan fleet.json --json | jq .changes'],
}

export async function plan(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, PLAN_COMMAND)
  // the file is checked before connecting: a bad file fails the same offline and online
  const fleet = await loadFleet(p.positionals[0] ?? DEFAULT_FLEET_FILE)
  // and so are the closure maps: a machine the file and its channel's map disagree on
  await channelNixMaps(fleet.file, fleet.machines)
  const enrolled = await withClient(home, p, (c) => c.machines())
  const result = planFleet(fleet.file, fleet.machines, enrolled)
  output(flag(p, 'json'), result, () => formatPlan(result))
  return result.changes === 0 ? 0 : PLAN_CHANGES_EXIT
}
