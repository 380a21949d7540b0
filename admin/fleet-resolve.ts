/**
 * What each machine of a fleet file ends up with, and where every value came
 * from: plan, apply, explain and inventory all read this one resolution.
 *
 * The rules (docs/fleet-file.md): tags are the union of the defaults', the
 * machine's groups' and the machine's own. A single value (the channel, each
 * metadata key) comes from the machine entry if it sets it, else from its
 * groups, else from the defaults. Two groups of one machine that set it to
 * different values are an error, unless exactly one side is marked
 * `"override": true`: clan's explicit priority, with one level.
 */
import type { FleetFile, MetaValue } from './fleet-file.ts'

/** A value and the fleet-file path that set it, like "groups.edge.channel". */
export interface Sourced<T> {
  value: T
  source: string
  /** "fleet.json:12:7": where that entry is; empty when nothing set the value */
  at: string
}

export interface ResolvedMachine {
  name: string
  /** Sorted; each with every entry that names it (most specific first), and where each is */
  tags: { tag: string; sources: string[]; at: string[] }[]
  groups: string[]
  /** null when no entry assigns a channel (or the machine's own entry says null) */
  channel: Sourced<string | null>
  meta: Record<string, Sourced<MetaValue>>
}

/** A value one entry proposes, with whether it is marked as the override. */
interface Candidate<T> {
  value: T
  path: (string | number)[]
  override: boolean
}

const dotted = (path: readonly (string | number)[]): string =>
  path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${p}`)).join('')

/**
 * The value of one field for machine `name`: its own entry, else its groups'
 * (override first; disagreeing groups are an error), else the defaults.
 */
function pick<T>(
  file: FleetFile,
  name: string,
  field: string,
  own: Candidate<T> | undefined,
  fromGroups: Candidate<T>[],
  fallback: Candidate<T> | undefined,
): Candidate<T> | undefined {
  if (own !== undefined) return own
  const overriding = fromGroups.filter((c) => c.override)
  const contenders = overriding.length > 0 ? overriding : fromGroups
  const first = contenders[0]
  const other = contenders.find((c) => JSON.stringify(c.value) !== JSON.stringify(first?.value))
  if (first !== undefined && other !== undefined)
    throw file.error(
      ['machines', name, 'groups'],
      `conflicting ${field}: ${dotted(first.path)} (${file.where(first.path)}) sets ${JSON.stringify(first.value)} ` +
        `and ${dotted(other.path)} (${file.where(other.path)}) sets ${JSON.stringify(other.value)}${first.override ? ', both marked "override"' : ''}; ` +
        `set it in the machine's own entry, or mark one group "override": true`,
    )
  return first ?? fallback
}

function resolveMachine(file: FleetFile, name: string): ResolvedMachine {
  const entry = file.machines[name] ?? {}
  const groups = entry.groups ?? []
  const tagSources = new Map<string, { sources: string[]; at: string[] }>()
  const addTag = (tag: string, path: (string | number)[]) => {
    const entry = tagSources.get(tag) ?? { sources: [], at: [] }
    entry.sources.push(dotted(path))
    entry.at.push(file.where(path))
    tagSources.set(tag, entry)
  }
  entry.tags?.forEach((t, i) => {
    addTag(t, ['machines', name, 'tags', i])
  })
  const channelCandidates: Candidate<string>[] = []
  groups.forEach((g, i) => {
    const group = file.groups[g]
    if (group === undefined)
      throw file.error(
        ['machines', name, 'groups', i],
        `unknown group "${g}"; the file's groups are: ${Object.keys(file.groups).join(', ') || '(none)'}`,
      )
    group.tags?.forEach((t, j) => {
      addTag(t, ['groups', g, 'tags', j])
    })
    if (group.channel !== undefined)
      channelCandidates.push({
        value: group.channel,
        path: ['groups', g, 'channel'],
        override: group.override === true,
      })
  })
  file.defaults.tags?.forEach((t, i) => {
    addTag(t, ['defaults', 'tags', i])
  })

  const own: Candidate<string | null> | undefined =
    entry.channel !== undefined
      ? { value: entry.channel, path: ['machines', name, 'channel'], override: true }
      : undefined
  const fallback =
    file.defaults.channel !== undefined
      ? { value: file.defaults.channel, path: ['defaults', 'channel'], override: false }
      : undefined
  const channel = pick<string | null>(file, name, 'channel', own, channelCandidates, fallback)
  if (channel?.value != null && file.channels[channel.value] === undefined)
    throw file.error(
      channel.path,
      `unknown channel "${channel.value}"; the file's channels are: ${Object.keys(file.channels).join(', ') || '(none)'}`,
    )

  const keys = new Set([
    ...Object.keys(file.defaults.meta ?? {}),
    ...groups.flatMap((g) => Object.keys(file.groups[g]?.meta ?? {})),
    ...Object.keys(entry.meta ?? {}),
  ])
  const meta: Record<string, Sourced<MetaValue>> = {}
  for (const key of [...keys].sort()) {
    const ownValue = entry.meta?.[key]
    const defaultValue = file.defaults.meta?.[key]
    const chosen = pick<MetaValue>(
      file,
      name,
      `meta "${key}"`,
      ownValue === undefined
        ? undefined
        : { value: ownValue, path: ['machines', name, 'meta', key], override: true },
      groups.flatMap((g) => {
        const group = file.groups[g]
        const value = group?.meta?.[key]
        return value === undefined
          ? []
          : [{ value, path: ['groups', g, 'meta', key], override: group?.override === true }]
      }),
      defaultValue === undefined
        ? undefined
        : { value: defaultValue, path: ['defaults', 'meta', key], override: false },
    )
    if (chosen !== undefined)
      meta[key] = { value: chosen.value, source: dotted(chosen.path), at: file.where(chosen.path) }
  }
  return {
    name,
    tags: [...tagSources.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([tag, { sources, at }]) => ({ tag, sources, at })),
    groups,
    channel: {
      value: channel?.value ?? null,
      source: channel === undefined ? '(none)' : dotted(channel.path),
      at: channel === undefined ? '' : file.where(channel.path),
    },
    meta,
  }
}

/** Every machine of `file`, by name; throws the first conflict or unknown reference as a FleetFileError. */
export function resolveFleet(file: FleetFile): ResolvedMachine[] {
  for (const [name, group] of Object.entries(file.groups))
    if (group.channel !== undefined && file.channels[group.channel] === undefined)
      throw file.error(['groups', name, 'channel'], `unknown channel "${group.channel}"`)
  if (file.defaults.channel !== undefined && file.channels[file.defaults.channel] === undefined)
    throw file.error(['defaults', 'channel'], `unknown channel "${file.defaults.channel}"`)
  return Object.keys(file.machines)
    .sort()
    .map((name) => resolveMachine(file, name))
}

/** The machine's tags, sorted. */
export const tagsOf = (m: ResolvedMachine): string[] => m.tags.map((t) => t.tag)
