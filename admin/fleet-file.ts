/**
 * The declarative fleet file (docs/fleet-file.md): machines with their tags,
 * groups and metadata, groups of tags, and release channels, kept in git by
 * the operator. This module reads and checks it; fleet-resolve.ts combines
 * its entries per machine, fleet-plan.ts compares the result with the fleet.
 *
 * Every error names the file, the line and column, and the field, as
 * `fleet.json:12:7: machines.edge-1.channel: …`: JSON syntax errors carry
 * V8's position, every later error is placed with lib/json-locate.ts.
 */
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { z } from 'zod'
import { machineName, tagName } from '../keys/index.ts'
import {
  DURATION_PATTERN,
  formatJsonPath,
  JsonLocator,
  type JsonPath,
  MAX_CONFIG_BYTES,
  UsageError,
} from '../lib/index.ts'
import {
  MAX_WINDOWS,
  type MaintenanceWindow,
  ON_FAILURE,
  parseWindowSpec,
  WindowSyntaxError,
} from '../protocol/index.ts'
import { ALL_MACHINES } from './commands/deploy-targets.ts'

/** A bad fleet file: `file`, `line` and `path` say where, and the message says it all again. */
export class FleetFileError extends UsageError {
  override name = 'FleetFileError'
  readonly file: string
  readonly line: number
  readonly field: string

  constructor(file: string, line: number, column: number, path: JsonPath, problem: string) {
    const field = formatJsonPath(path)
    super(`${file}:${line}:${column}: ${field === '' ? '' : `${field}: `}${problem}`)
    this.file = file
    this.line = line
    this.field = field
  }
}

const durationText = z.string().regex(DURATION_PATTERN, 'a duration like 90s, 15m, 12h or 30d')
/** A share of a channel's machines: a count ("1") or a percentage ("50%"). */
const shareText = z.string().regex(/^(\d+|\d+(\.\d+)?%)$/, 'a count like "1" or a percentage like "50%"')
const generationText = z
  .string()
  .regex(/^[A-Za-z0-9._+-]{1,128}$/, '1 to 128 letters, digits and . _ + - (e.g. app-1.4)')
const metaValue = z.union([z.string().max(1024), z.number(), z.boolean()])
export type MetaValue = z.infer<typeof metaValue>
const meta = z.record(z.string().min(1).max(128), metaValue)

const rolloutSchema = z.strictObject({
  waves: z.array(shareText).min(1).max(20),
  maxFailures: shareText.optional(),
  soak: durationText.optional(),
  onFailure: z.enum(ON_FAILURE).optional(),
  canaryTag: tagName.optional(),
  offlineTimeout: durationText.optional(),
})
export type RolloutEntry = z.infer<typeof rolloutSchema>

const channelSchema = z.strictObject({
  /** A .tar or .tar.gz, relative to the fleet file */
  archive: z.string().min(1).optional(),
  /** A NixOS closure map (deploy --nix-map), relative to the fleet file */
  nixMap: z.string().min(1).optional(),
  /** What the machines report once they run it; how plan tells whether they do */
  generation: generationText,
  healthCheck: z.string().min(1).max(4096).optional(),
  healthTimeout: durationText.optional(),
  confirmTimeout: durationText.optional(),
  expires: durationText.optional(),
  rollout: rolloutSchema.optional(),
})
export type ChannelEntry = z.infer<typeof channelSchema>

const groupObject = z.strictObject({
  tags: z.array(tagName).max(64).optional(),
  channel: z.string().optional(),
  meta: meta.optional(),
  /** Wins over groups without it when two groups of a machine disagree */
  override: z.boolean().optional(),
})
/** A group is a list of tags, or an object that may also set a channel and metadata. */
const groupSchema = z.union([z.array(tagName).max(64), groupObject])
export type GroupEntry = z.infer<typeof groupObject>

const machineSchema = z.strictObject({
  tags: z.array(tagName).max(64).optional(),
  groups: z.array(z.string()).max(64).optional(),
  /** null: the machine follows no channel even when a group or the defaults name one */
  channel: z.string().nullable().optional(),
  meta: meta.optional(),
})
export type MachineEntry = z.infer<typeof machineSchema>

const defaultsSchema = z.strictObject({
  tags: z.array(tagName).max(64).optional(),
  channel: z.string().optional(),
  meta: meta.optional(),
})

const fleetSchema = z.strictObject({
  /** The operator's name for the fleet, echoed by inventory */
  fleet: z.string().max(128).optional(),
  defaults: defaultsSchema.optional(),
  groups: z.record(z.string(), groupSchema).optional(),
  channels: z.record(z.string(), channelSchema).optional(),
  machines: z.record(z.string(), machineSchema),
  /** Maintenance windows by tag: "HH:MM-HH:MM[@days]", or a list of them (deploy --window) */
  windows: z
    .record(z.string(), z.union([z.string().max(64), z.array(z.string().max(64)).max(MAX_WINDOWS)]))
    .optional(),
})

/** A fleet file, checked: its entries, and where each sits in the text for later errors. */
export interface FleetFile {
  /** As the operator named it, for messages */
  path: string
  /** Directory that payload paths are relative to */
  dir: string
  name: string | undefined
  defaults: z.infer<typeof defaultsSchema>
  groups: Record<string, GroupEntry>
  channels: Record<string, ChannelEntry>
  machines: Record<string, MachineEntry>
  /** When machines may activate what apply deploys (signed into its manifests); empty: at once */
  windows: MaintenanceWindow[]
  /** An error at `path` of this file */
  error(path: JsonPath, problem: string): FleetFileError
  /** "fleet.json:12:7", for pointing at a second entry inside a message */
  where(path: JsonPath): string
}

/** V8's "(line 3 column 5)", or the end of the text when the message has none. */
function syntaxPosition(message: string, text: string): { line: number; column: number } {
  const m = /\(line (\d+) column (\d+)\)/.exec(message)
  if (m) return { line: Number(m[1]), column: Number(m[2]) }
  const lines = text.split('\n')
  return { line: lines.length, column: (lines.at(-1) ?? '').length + 1 }
}

const NAMES = { groups: tagName, channels: tagName, machines: machineName, windows: tagName } as const

/** Parses and checks `text` as the fleet file `path` (read from disk by loadFleetFile). */
export function parseFleetFile(path: string, text: string): FleetFile {
  const body = text.replace(/^\uFEFF/, '')
  let raw: unknown
  try {
    raw = JSON.parse(body)
  } catch (err) {
    const message = (err as Error).message.replace(/\s*\(line \d+ column \d+\)/, '')
    const at = syntaxPosition((err as Error).message, body)
    throw new FleetFileError(path, at.line, at.column, [], `not valid JSON: ${message}`)
  }
  const locator = new JsonLocator(body)
  // a group written as a list has its tags one level up from where the schema sees them
  const textPath = (p: JsonPath): JsonPath => {
    const groups = (raw as { groups?: Record<string, unknown> }).groups
    if (p[0] === 'groups' && p[2] === 'tags' && Array.isArray(groups?.[String(p[1])]))
      return [...p.slice(0, 2), ...p.slice(3)]
    return p
  }
  const error = (p: JsonPath, problem: string): FleetFileError => {
    const at = locator.locate(textPath(p))
    return new FleetFileError(path, at.line, at.column, p, problem)
  }
  const where = (p: JsonPath): string => {
    const at = locator.locate(textPath(p))
    return `${path}:${at.line}:${at.column}`
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw error([], 'a fleet file is one JSON object, like {"machines": {"web-1": {"tags": ["web"]}}}')
  for (const [section, schema] of Object.entries(NAMES)) {
    const entries = (raw as Record<string, unknown>)[section]
    if (typeof entries !== 'object' || entries === null) continue
    for (const key of Object.keys(entries))
      if (!schema.safeParse(key).success)
        throw error(
          [section, key],
          `"${key}" is not a valid name: lowercase letters, digits and inner hyphens${section === 'machines' ? '' : ', "_" and "."'}`,
        )
  }
  const machines = (raw as { machines?: unknown }).machines
  if (typeof machines === 'object' && machines !== null && Object.hasOwn(machines, ALL_MACHINES))
    throw error(
      ['machines', ALL_MACHINES],
      `"${ALL_MACHINES}" is reserved: "deploy --to all" means every machine`,
    )
  const parsed = fleetSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    if (issue === undefined) throw error([], 'does not match the fleet file schema')
    const problem =
      issue.code === 'unrecognized_keys'
        ? `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`
        : issue.code === 'invalid_union'
          ? issue.path[0] === 'windows'
            ? 'must be a window "HH:MM-HH:MM[@days]" or a list of them'
            : 'must be a list of tags, or an object with "tags", "channel", "meta" and "override"'
          : issue.message
    const at = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0] ?? ''] : issue.path
    throw error(at as JsonPath, problem)
  }
  const value = parsed.data
  const groups = Object.fromEntries(
    Object.entries(value.groups ?? {}).map(([name, g]) => [name, Array.isArray(g) ? { tags: g } : g]),
  )
  // A "nixMap" channel may have a "rollout" too: in waves, its closures go out as one manifest with a closure map.
  for (const [name, channel] of Object.entries(value.channels ?? {}))
    if ((channel.archive === undefined) === (channel.nixMap === undefined))
      throw error(['channels', name], 'a channel names exactly one payload: "archive" or "nixMap"')
  return {
    path,
    dir: dirname(resolve(path)),
    name: value.fleet,
    defaults: value.defaults ?? {},
    groups,
    channels: value.channels ?? {},
    machines: value.machines,
    windows: fleetWindows(value.windows ?? {}, error),
    error,
    where,
  }
}

/** The `windows` section as manifests carry it; a bad window is an error at its place in the file. */
function fleetWindows(
  section: Record<string, string | string[]>,
  error: (path: JsonPath, problem: string) => FleetFileError,
): MaintenanceWindow[] {
  const windows: MaintenanceWindow[] = []
  for (const [tag, specs] of Object.entries(section)) {
    for (const [i, spec] of (Array.isArray(specs) ? specs : [specs]).entries()) {
      const at: JsonPath = Array.isArray(specs) ? ['windows', tag, i] : ['windows', tag]
      try {
        windows.push(parseWindowSpec(tag, spec))
      } catch (err) {
        if (err instanceof WindowSyntaxError) throw error(at, err.message)
        throw err
      }
      if (windows.length > MAX_WINDOWS) throw error(at, `at most ${MAX_WINDOWS} windows in all`)
    }
  }
  return windows
}

/** Reads the fleet file at `path`; a missing or oversized file is a UsageError naming it. */
export async function loadFleetFile(path: string): Promise<FleetFile> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new UsageError(
      code === 'ENOENT'
        ? `the fleet file ${path} does not exist (docs/fleet-file.md describes one)`
        : `cannot read the fleet file ${path}: ${(err as Error).message}`,
    )
  }
  if (text.length > MAX_CONFIG_BYTES * 16)
    throw new UsageError(`the fleet file ${path} is larger than ${(MAX_CONFIG_BYTES * 16) / 1024} KiB`)
  return parseFleetFile(path, text)
}
