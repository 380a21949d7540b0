/**
 * Options from three places, for commands that run as services (the daemons):
 * the command line, FLEETMESH_<OPTION> environment variables and a JSON file
 * named by `--config` (or FLEETMESH_CONFIG; lib/config-file.ts reads it). The
 * command line wins over the environment, the environment over the file, the
 * file over the command's own defaults. The CommandSpec stays the one source
 * of truth: the keys and variables are its options, checked as it declares
 * them, and every error names the file key or the variable it came from
 * (`Parsed.sources`, used by `optionLabel`).
 *
 * Variable names are the long option upper-cased with dashes as underscores
 * (FLEETMESH_STATE, FLEETMESH_COORDINATOR_ADDR). A repeatable option's
 * variable is comma-separated, as on the command line, where `list` splits
 * every repeatable option on commas: multiaddrs, ports, ip:port endpoints and
 * variable names hold none. Booleans are 1/0, true/false, yes/no or on/off.
 * An empty variable counts as unset (an EnvironmentFile line `FLEETMESH_X=`),
 * and variables that name no option are left alone: FLEETMESH_HOME and
 * friends belong to other commands.
 *
 * @example
 *
 * ```ts
 * export const RELAY_COMMAND = configurable({ name: 'relay', options: { state: … }, … })
 * const p = await parseConfiguredCommand(process.argv.slice(2), RELAY_COMMAND)
 * // `fleetmesh relay --config /etc/fleetmesh/relay.json` with {"state": "/var/lib/r"}
 * str(p, 'state')   // '/var/lib/r'; unless FLEETMESH_STATE or --state says otherwise
 * ```
 */
import {
  type CommandSpec,
  HelpRequested,
  type Options,
  type Parsed,
  parseCommand,
  UsageError,
} from './cli.ts'
import { type OptionValue, readConfigFile, splitList } from './config-file.ts'

export const ENV_PREFIX = 'FLEETMESH_'

/** The environment variable that sets `option`: FLEETMESH_ + upper case, dashes as underscores. */
export function envName(option: string): string {
  return `${ENV_PREFIX}${option.toUpperCase().replaceAll('-', '_')}`
}

export const CONFIG_OPTIONS = {
  config: {
    type: 'string',
    value: '<file.json>',
    description: `read options from this JSON file, keys as the long options: {"state": "/var/lib/x", "json": true} (also ${envName('config')})`,
  },
  'print-config': {
    type: 'boolean',
    description:
      'print the options merged from the command line, the environment and --config as JSON, and exit',
  },
} as const satisfies Options

const CONFIG_NOTES = [
  'Every option can also be set in the --config file or as FLEETMESH_<OPTION> (upper case, dashes as',
  'underscores: FLEETMESH_STATE); repeatable ones comma-separated, booleans 1 or 0. The command line',
  'wins over the environment, the environment over the file.',
]

/** `spec` with --config and --print-config, their usage and the help note saying how the sources combine. */
export function configurable(spec: CommandSpec): CommandSpec {
  return {
    ...spec,
    usage: `${spec.usage} [--config <file.json>] [--print-config]`,
    options: { ...spec.options, ...CONFIG_OPTIONS },
    notes: [...(spec.notes ?? []), ...CONFIG_NOTES],
  }
}

/** `--print-config` was given: `text` (the merged options as JSON) is the command's output, exit code 0. */
export class ConfigPrintRequested extends HelpRequested {
  override name = 'ConfigPrintRequested'
}

const TRUE = /^(1|true|yes|on)$/i
const FALSE = /^(0|false|no|off)$/i

/** The options `env` sets for `spec`, checked like their flags. */
export function envOptions(spec: CommandSpec, env: NodeJS.ProcessEnv): Record<string, OptionValue> {
  const values: Record<string, OptionValue> = {}
  for (const [name, doc] of Object.entries(spec.options)) {
    if (name === 'print-config') continue
    const variable = envName(name)
    const raw = env[variable]
    if (raw === undefined || raw === '') continue
    if (doc.type === 'boolean') {
      if (!TRUE.test(raw) && !FALSE.test(raw))
        throw new UsageError(`${variable} must be 1 or 0 (true or false) to set --${name}, not "${raw}"`)
      values[name] = TRUE.test(raw)
    } else values[name] = doc.multiple === true ? splitList(raw) : raw
  }
  return values
}

/** Command-line values with repeatable options split on commas, so every source has one shape. */
function commandLineOptions(p: Parsed, spec: CommandSpec): Record<string, OptionValue> {
  const values: Record<string, OptionValue> = {}
  for (const [name, value] of Object.entries(p.values)) {
    if (value === undefined) continue
    values[name] =
      spec.options[name]?.multiple === true && Array.isArray(value) ? value.flatMap(splitList) : value
  }
  return values
}

/** The merged options as a config file would hold them, with where each came from as a comment key. */
function formatConfig(spec: CommandSpec, parsed: Parsed): string {
  const out: Record<string, unknown> = {}
  const from: Record<string, string> = {}
  for (const name of Object.keys(spec.options)) {
    const value = parsed.values[name]
    if (value === undefined || name === 'config' || name === 'print-config') continue
    out[name] = value
    from[name] = parsed.sources?.[name] ?? `--${name}`
  }
  const note = `fleetmesh ${spec.name}: options not listed take their defaults (fleetmesh ${spec.name} --help)`
  return JSON.stringify({ '//': note, ...out, '//from': from }, null, 2)
}

/**
 * Parses `argv` like {@link parseCommand}, then merges in the options from
 * `env` and the --config file (command line > environment > file). Options
 * the spec marks `required` must come from one of them. `--print-config`
 * throws ConfigPrintRequested with the merged options as JSON.
 */
export async function parseConfiguredCommand(
  argv: readonly string[],
  spec: CommandSpec,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Parsed> {
  if (spec.options.config === undefined)
    throw new TypeError(`the spec of ${spec.name} takes no --config: make it with configurable()`)
  const commandLine = parseCommand(argv, spec)
  const fromEnv = envOptions(spec, env)
  const fromCommandLine = commandLineOptions(commandLine, spec)
  const values: Parsed['values'] = {}
  const sources: Record<string, string> = {}
  const merge = (from: Record<string, OptionValue>, label: (name: string) => string) => {
    for (const [name, value] of Object.entries(from)) {
      values[name] = value
      sources[name] = label(name)
    }
  }
  const configPath = fromCommandLine.config ?? fromEnv.config
  if (typeof configPath === 'string') {
    const via = fromCommandLine.config !== undefined ? '--config' : envName('config')
    merge(await readConfigFile(configPath, spec, via), (name) => `${name} in ${configPath}`)
  }
  merge(fromEnv, envName)
  merge(fromCommandLine, (name) => `--${name}`)
  const parsed: Parsed = { values, positionals: commandLine.positionals, sources }
  if (values['print-config'] === true) throw new ConfigPrintRequested(formatConfig(spec, parsed))
  for (const [name, doc] of Object.entries(spec.options)) {
    if (doc.required === true && (values[name] === undefined || values[name] === ''))
      throw new UsageError(
        `--${name} is required: give it on the command line, as ${envName(name)} or as "${name}" in the --config file\n` +
          `usage: ${spec.usage}`,
      )
  }
  return parsed
}
