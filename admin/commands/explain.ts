/** `fleetmesh explain <machine>`: each of a machine's values in the fleet file, and the entry it came from. */
import { type CommandSpec, flag, output, parseCommand, UsageError } from '../../lib/index.ts'
import { FILE_OPTION, fileOption, loadFleet } from '../fleet-command.ts'
import type { ChannelEntry } from '../fleet-file.ts'
import type { ResolvedMachine } from '../fleet-resolve.ts'
import { JSON_OPTION } from '../session.ts'

const USAGE = 'fleetmesh explain <machine> [--file <fleet.json>] [--json]'

export const EXPLAIN_COMMAND: CommandSpec = {
  name: 'explain',
  summary:
    "Show where each of a machine's values in the fleet file comes from (machine entry, group, channel, defaults).",
  usage: USAGE,
  options: { ...FILE_OPTION, ...JSON_OPTION },
  notes: ['Reads the file only; it does not contact the coordinator.'],
  examples: ['fleetmesh explain edge-1 --file fleet.json'],
}

function human(m: ResolvedMachine, channel: ChannelEntry | undefined, file: string): string {
  const width = Math.max(
    8,
    ...m.tags.map((t) => t.tag.length),
    ...Object.keys(m.meta).map((k) => k.length + 2),
  )
  const lines = [`${m.name} (${file})`, `  groups: ${m.groups.join(', ') || '(none)'}`, '  tags:']
  for (const t of m.tags)
    lines.push(`    ${t.tag.padEnd(width)}  from ${t.sources.map((s, i) => `${s} (${t.at[i]})`).join(', ')}`)
  if (m.tags.length === 0) lines.push('    (none)')
  const channelAt = m.channel.at === '' ? '' : ` (${m.channel.at})`
  lines.push(`  channel: ${m.channel.value ?? '(none)'}  from ${m.channel.source}${channelAt}`)
  if (channel !== undefined && m.channel.value !== null) {
    const at = `channels.${m.channel.value}`
    const payload = channel.archive !== undefined ? `archive ${channel.archive}` : `nixMap ${channel.nixMap}`
    lines.push(`    ${payload}  from ${at}.${channel.archive !== undefined ? 'archive' : 'nixMap'}`)
    lines.push(`    generation ${channel.generation}  from ${at}.generation`)
    if (channel.rollout !== undefined)
      lines.push(`    waves ${channel.rollout.waves.join(', ')}  from ${at}.rollout`)
  }
  lines.push('  meta:')
  for (const [key, v] of Object.entries(m.meta))
    lines.push(`    ${key.padEnd(width)}  = ${JSON.stringify(v.value)}  from ${v.source} (${v.at})`)
  if (Object.keys(m.meta).length === 0) lines.push('    (none)')
  return lines.join('\n')
}

export async function explain(argv: string[]): Promise<void> {
  const p = parseCommand(argv, EXPLAIN_COMMAND)
  const name = p.positionals[0]
  if (name === undefined) throw new UsageError(`name the machine to explain\nusage: ${USAGE}`)
  const path = fileOption(p)
  const { file, machines } = await loadFleet(path)
  const machine = machines.find((m) => m.name === name)
  if (machine === undefined)
    throw new UsageError(
      `${path} has no machine "${name}"; its machines: ${machines.map((m) => m.name).join(', ') || '(none)'}`,
    )
  const channel = machine.channel.value === null ? undefined : file.channels[machine.channel.value]
  output(flag(p, 'json'), { ...machine, channelEntry: channel ?? null }, () => human(machine, channel, path))
}
