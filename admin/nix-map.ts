/**
 * The `deploy --nix-map` file: a JSON object mapping machine names to the
 * store path of each machine's system closure, as a fleet's build produces it:
 *
 *   { "edge-1": "/nix/store/…-nixos-system-edge-1-24.05", "edge-2": "/nix/store/…" }
 *
 * A fleet file's `nixMap` channel names such a file (channelNixMaps).
 * Every error names the entry that is wrong.
 */
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { z } from 'zod'
import { machineName } from '../keys/index.ts'
import { UsageError } from '../lib/index.ts'
import { storePath } from '../protocol/index.ts'
import type { FleetFile } from './fleet-file.ts'
import type { ResolvedMachine } from './fleet-resolve.ts'

const MAX_MACHINES = 10_000

const nixMapSchema = z.record(z.string(), z.unknown())

/**
 * Machine name → store path, sorted by machine name; throws a UsageError naming
 * `file` (as `label`, by default "--nix-map <file>") and the bad entry.
 */
export function parseNixMap(text: string, file: string, label = `--nix-map ${file}`): Map<string, string> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new UsageError(`${label} is not JSON: ${(err as Error).message}`)
  }
  const parsed = nixMapSchema.safeParse(value)
  if (!parsed.success)
    throw new UsageError(
      `${label} must be a JSON object mapping machine names to store paths, like {"edge-1": "/nix/store/…-nixos-system-edge-1"}`,
    )
  const entries = Object.entries(parsed.data).sort(([a], [b]) => a.localeCompare(b))
  if (entries.length === 0) throw new UsageError(`${label} names no machines`)
  if (entries.length > MAX_MACHINES)
    throw new UsageError(`${label} names ${entries.length} machines; at most ${MAX_MACHINES}`)
  const problems: string[] = []
  for (const [name, path] of entries) {
    if (!machineName.safeParse(name).success)
      problems.push(`"${name}" is not a machine name (lowercase letters, digits and inner hyphens)`)
    else if (!storePath.safeParse(path).success)
      problems.push(
        `"${name}": ${typeof path === 'string' ? `"${path.slice(0, 120)}"` : JSON.stringify(path).slice(0, 120)} is not a /nix/store/<32-character hash>-<name> path`,
      )
  }
  if (problems.length > 0)
    throw new UsageError(
      `${label}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? `; and ${problems.length - 5} more` : ''}`,
    )
  return new Map(entries as [string, string][])
}

export async function readNixMap(file: string, label = `--nix-map ${file}`): Promise<Map<string, string>> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read ${label}: ${(err as Error).message}`)
  }
  return parseNixMap(text, file, label)
}

/**
 * The closure map of each `nixMap` channel of a fleet file (read relative to
 * it), by channel name. A map must name exactly the channel's machines as the
 * file resolves them: a machine of the channel it lacks, or an entry for a
 * machine that does not follow the channel, is an error naming the fleet file's
 * line, the field, the map and the machine.
 */
export async function channelNixMaps(
  file: FleetFile,
  machines: readonly ResolvedMachine[],
): Promise<Map<string, Map<string, string>>> {
  const maps = new Map<string, Map<string, string>>()
  for (const [name, entry] of Object.entries(file.channels)) {
    if (entry.nixMap === undefined) continue
    const field = ['channels', name, 'nixMap']
    const label = `${file.where(field)}: channels.${name}.nixMap ${entry.nixMap}`
    const map = await readNixMap(resolve(file.dir, entry.nixMap), label)
    const members = machines.filter((m) => m.channel.value === name).map((m) => m.name)
    const lacking = members.filter((m) => !map.has(m))
    const strangers = [...map.keys()].filter((m) => !members.includes(m))
    if (lacking.length > 0)
      throw file.error(
        field,
        `${entry.nixMap} has no closure for ${list(lacking)} of channel ${name}; ` +
          'add an entry for each machine of the channel, or move the machine to another channel',
      )
    if (strangers.length > 0)
      throw file.error(
        field,
        `${entry.nixMap} names ${list(strangers)}, which ${strangers.length === 1 ? 'does' : 'do'} not follow channel ${name} ` +
          `(its machines: ${members.join(', ') || 'none'}); remove the entry, or give the machine channel ${name}`,
      )
    maps.set(name, map)
  }
  return maps
}

const list = (names: string[]): string =>
  `machine${names.length === 1 ? '' : 's'} ${names.slice(0, 10).join(', ')}${names.length > 10 ? ` and ${names.length - 10} more` : ''}`
