/**
 * `fleetmesh inventory`: the fleet file's machines, resolved, for other tools.
 * `--json` is what Nix evaluation (clan, a flake) reads with builtins.fromJSON,
 * so machine names and tags have one source.
 */
import { type CommandSpec, flag, output, parseCommand } from '../../lib/index.ts'
import { FILE_OPTION, fileOption, loadFleet } from '../fleet-command.ts'
import { tagsOf } from '../fleet-resolve.ts'
import { JSON_OPTION } from '../session.ts'

export const INVENTORY_COMMAND: CommandSpec = {
  name: 'inventory',
  summary: 'Print the fleet file resolved per machine: tags, groups, channel, generation and metadata.',
  usage: 'fleetmesh inventory [--file <fleet.json>] [--json]',
  options: { ...FILE_OPTION, ...JSON_OPTION },
  notes: [
    'Reads the file only. The JSON has "machines": {"<name>": {"tags", "groups", "channel", "generation", "meta"}}.',
  ],
  examples: [
    'fleetmesh inventory --json > inventory.json   # in Nix: builtins.fromJSON (builtins.readFile ./inventory.json)',
  ],
}

export async function inventory(argv: string[]): Promise<void> {
  const p = parseCommand(argv, INVENTORY_COMMAND)
  const { file, machines } = await loadFleet(fileOption(p))
  const value = {
    fleet: file.name ?? null,
    machines: Object.fromEntries(
      machines.map((m) => [
        m.name,
        {
          tags: tagsOf(m),
          groups: m.groups,
          channel: m.channel.value,
          generation: m.channel.value === null ? null : (file.channels[m.channel.value]?.generation ?? null),
          meta: Object.fromEntries(Object.entries(m.meta).map(([k, v]) => [k, v.value])),
        },
      ]),
    ),
  }
  output(flag(p, 'json'), value, () =>
    machines
      .map((m) => `${m.name.padEnd(24)} ${(m.channel.value ?? '-').padEnd(12)} ${tagsOf(m).join(',') || '-'}`)
      .join('\n'),
  )
}
