/**
 * The one event log of the daemons (coordinator, relay, agent): every event
 * has a level, and goes to stdout either as a JSON line
 * `{"level":"info","at":"…","event":"…",…fields}` (--json) or as the
 * event's human text, with warnings and errors marked so they stand out on a
 * terminal. Without --json the output stays text even when stdout is a pipe:
 * scripts and service managers that read text today keep reading text, and
 * anything that parses events asks for --json.
 *
 * Fields are written as given: callers never pass secrets (tokens, keys).
 *
 * @example
 *
 * ```ts
 * const log = daemonLog({ json: true, level: 'warn' })
 * log.info('ready', { peerId }, 'coordinator is up') // dropped below warn
 * log.warn('reservation', { status: 'lost', relay }, `relay reservation lost on ${relay}`)
 * ```
 */
import { flag, type Options, optionLabel, type Parsed, str, UsageError } from '../lib/index.ts'

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export type LogFields = Record<string, unknown>

/** Writes one event at a level; `human` is the text form (default: `event key=value …`). */
export type LogAt = (level: LogLevel, event: string, fields?: LogFields, human?: string) => void

/** An event at info level, with its text form: what daemon-cli.ts's helpers print through. */
export type Say = (event: string, fields: LogFields, human: string) => void

export interface DaemonLog {
  readonly level: LogLevel
  at: LogAt
  debug(event: string, fields?: LogFields, human?: string): void
  info(event: string, fields?: LogFields, human?: string): void
  warn(event: string, fields?: LogFields, human?: string): void
  error(event: string, fields?: LogFields, human?: string): void
  /** Info-level events for helpers that take a {@link Say}. */
  say: Say
}

export interface DaemonLogInit {
  json: boolean
  /** Events below this level are not written. @default 'info' */
  level?: LogLevel
  /** @default process.stdout */
  write?: (line: string) => void
}

/** How warnings and errors are marked in the text form. */
const MARKS: Record<LogLevel, string> = { debug: '', info: '', warn: 'warning: ', error: 'error: ' }

export function daemonLog(init: DaemonLogInit): DaemonLog {
  const level = init.level ?? 'info'
  const threshold = LOG_LEVELS.indexOf(level)
  const write = init.write ?? ((line: string) => void process.stdout.write(line))
  const at: LogAt = (lvl, event, fields = {}, human) => {
    if (LOG_LEVELS.indexOf(lvl) < threshold) return
    if (init.json)
      write(`${JSON.stringify({ level: lvl, at: new Date().toISOString(), event, ...fields })}\n`)
    else write(`${MARKS[lvl]}${human ?? fieldText(event, fields)}\n`)
  }
  return {
    level,
    at,
    debug: (event, fields, human) => at('debug', event, fields, human),
    info: (event, fields, human) => at('info', event, fields, human),
    warn: (event, fields, human) => at('warn', event, fields, human),
    error: (event, fields, human) => at('error', event, fields, human),
    say: (event, fields, human) => at('info', event, fields, human),
  }
}

/** `event key=value …`, objects as JSON, absent values left out. */
function fieldText(event: string, fields: LogFields): string {
  const detail = Object.entries(fields)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ')
  return detail === '' ? event : `${event} ${detail}`
}

/** An update that ended badly is a warning wherever its status is printed; other states are info. */
export function updateStateLevel(state: unknown): LogLevel {
  return state === 'failed' || state === 'rolled-back' || state === 'refused' ? 'warn' : 'info'
}

/** The output options every daemon takes. */
export const LOG_OPTIONS = {
  json: {
    type: 'boolean',
    description: 'print events as JSON lines ({"level","at","event",…}) instead of text',
  },
  'log-level': {
    type: 'string',
    value: 'debug|info|warn|error',
    description: 'the least severe events to print',
    default: 'info',
  },
} as const satisfies Options

/** The daemon log the parsed {@link LOG_OPTIONS} ask for. */
export function daemonLogFrom(p: Parsed): DaemonLog {
  const level = str(p, 'log-level') ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(level))
    throw new UsageError(
      `${optionLabel(p, 'log-level')} must be one of ${LOG_LEVELS.join(', ')}, not "${level}"`,
    )
  return daemonLog({ json: flag(p, 'json'), level: level as LogLevel })
}
