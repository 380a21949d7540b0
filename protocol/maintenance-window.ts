/**
 * Maintenance windows: when a machine may activate an update. A window is a
 * daily span of local wall-clock time for the machines carrying one tag,
 * optionally only on some weekdays; the admin signs them into the manifest, so
 * the coordinator cannot make a device activate outside its window. An agent
 * downloads and prepares at once and activates only while a window of one of
 * its tags is open (agent/update-steps.ts); a manifest without windows, or
 * whose windows name none of the machine's tags, activates at once.
 *
 * Everything here is pure: the instant and the IANA time zone are passed in.
 *
 * @example
 *
 * ```ts
 * const window = parseWindowArg('lab=22:00-04:00@mon-fri')
 * windowState([window], ['lab'], Date.now(), 'Europe/Berlin') // { kind: 'closed', opensAt } or { kind: 'open' }
 * ```
 */
import { z } from 'zod'
import { tagName } from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'

/** Weekdays in the order of Date#getUTCDay. */
export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
export type Weekday = (typeof WEEKDAYS)[number]

/** Windows one manifest may carry. */
export const MAX_WINDOWS = 32

const clockTime = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'a time of day "HH:MM", 00:00 to 23:59')

/**
 * One window: `start` to `end` local time, on the days it opens on (every day
 * when absent). An end at or before the start spans midnight into the next
 * day (an end equal to the start: 24 hours).
 */
export const maintenanceWindowSchema = z.strictObject({
  tag: tagName,
  start: clockTime,
  end: clockTime,
  days: z
    .array(z.enum(WEEKDAYS))
    .min(1)
    .max(7)
    .refine((d) => new Set(d).size === d.length, 'each day at most once')
    .optional(),
})
export type MaintenanceWindow = z.infer<typeof maintenanceWindowSchema>

/** A manifest's windows; left out of the manifest when there are none. */
export const maintenanceWindowsSchema = z.array(maintenanceWindowSchema).min(1).max(MAX_WINDOWS)

export class WindowSyntaxError extends CodedError<'window-syntax'> {
  override name = 'WindowSyntaxError'
  constructor(message: string) {
    super('window-syntax', message)
  }
}

const SPEC_FORM = '"HH:MM-HH:MM" or "HH:MM-HH:MM@mon,tue,..." (day ranges like mon-fri too)'

/**
 * Parses a window as the fleet file writes it, under its tag: "22:00-04:00",
 * "01:00-05:00@sat,sun", "22:00-02:00@mon-fri". Throws WindowSyntaxError saying what is wrong.
 */
export function parseWindowSpec(tag: string, text: string): MaintenanceWindow {
  const m = /^([^-@]*)-([^@]*)(?:@(.*))?$/.exec(text.trim())
  if (m === null) throw new WindowSyntaxError(`window "${text}" for tag "${tag}": expected ${SPEC_FORM}`)
  const [, start = '', end = '', dayText] = m
  for (const [what, value] of [
    ['start', start],
    ['end', end],
  ] as const) {
    if (!clockTime.safeParse(value).success)
      throw new WindowSyntaxError(
        `window "${text}" for tag "${tag}": the ${what} "${value}" is not a time of day "HH:MM" (00:00 to 23:59)`,
      )
  }
  if (!tagName.safeParse(tag).success)
    throw new WindowSyntaxError(
      `window "${text}": "${tag}" is not a tag name (lowercase letters, digits, "-", "_" and ".")`,
    )
  const days = dayText === undefined ? undefined : parseDays(dayText, `window "${text}" for tag "${tag}"`)
  return { tag, start, end, ...(days !== undefined ? { days } : {}) }
}

/** Parses `deploy --window`: "<tag>=HH:MM-HH:MM[@days]". */
export function parseWindowArg(text: string): MaintenanceWindow {
  const eq = text.indexOf('=')
  if (eq <= 0)
    throw new WindowSyntaxError(
      `window "${text}": expected "<tag>=" and then ${SPEC_FORM}, e.g. lab=22:00-04:00`,
    )
  return parseWindowSpec(text.slice(0, eq).trim(), text.slice(eq + 1))
}

function parseDays(text: string, context: string): Weekday[] {
  const days: Weekday[] = []
  const dayIndex = (name: string): number => {
    const i = (WEEKDAYS as readonly string[]).indexOf(name.trim().toLowerCase())
    if (i < 0) throw new WindowSyntaxError(`${context}: "${name}" is not a day; use ${WEEKDAYS.join(', ')}`)
    return i
  }
  for (const item of text.split(',')) {
    const [from, to, extra] = item.split('-')
    if (from === undefined || extra !== undefined)
      throw new WindowSyntaxError(`${context}: "${item}" is neither a day nor a range like mon-fri`)
    const first = dayIndex(from)
    // a range may wrap around the week: fri-mon
    const count = to === undefined ? 1 : ((dayIndex(to) - first + 7) % 7) + 1
    for (let k = 0; k < count; k++) {
      const day = WEEKDAYS[(first + k) % 7] as Weekday
      if (days.includes(day)) throw new WindowSyntaxError(`${context}: "${day}" is named twice`)
      days.push(day)
    }
  }
  return days
}

/** The text form of a window, as parseWindowArg reads it. */
export function formatWindow(w: MaintenanceWindow): string {
  return `${w.tag}=${w.start}-${w.end}${w.days ? `@${w.days.join(',')}` : ''}`
}

// ---------------------------------------------------------------- time zones

const formatters = new Map<string, Intl.DateTimeFormat>()

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    })
    formatters.set(timeZone, f)
  }
  return f
}

/** Whether `timeZone` is an IANA time zone this runtime knows ("Europe/Berlin", "UTC"). */
export function isTimeZone(timeZone: string): boolean {
  try {
    formatter(timeZone)
    return true
  } catch {
    return false
  }
}

/** The system's time zone, as Intl sees it (TZ, /etc/localtime). */
export function systemTimeZone(): string {
  return new Intl.DateTimeFormat().resolvedOptions().timeZone
}

/** How far local time in `timeZone` is ahead of UTC at `atMs`, in ms. */
function offsetAt(atMs: number, timeZone: string): number {
  const p: Record<string, number> = {}
  for (const part of formatter(timeZone).formatToParts(atMs)) p[part.type] = Number(part.value)
  const wall = Date.UTC(
    p.year ?? 0,
    (p.month ?? 1) - 1,
    p.day ?? 1,
    p.hour ?? 0,
    p.minute ?? 0,
    p.second ?? 0,
  )
  return wall - (atMs - (((atMs % 1000) + 1000) % 1000))
}

const HOUR = 3_600_000
const DAY = 24 * HOUR

/**
 * The instant a local wall time (given as if it were UTC) happens in `timeZone`,
 * read like Temporal's "compatible": a time that occurs twice (clocks going
 * back) is its first occurrence; one that is skipped (clocks going forward) is
 * read with the offset from before the jump, so it lands as far after the jump.
 */
function instantOf(wallMs: number, timeZone: string): number {
  const before = offsetAt(wallMs - DAY, timeZone)
  const after = offsetAt(wallMs + DAY, timeZone)
  const fits = [wallMs - before, wallMs - after].filter((t) => offsetAt(t, timeZone) === wallMs - t)
  return fits.length > 0 ? Math.min(...fits) : wallMs - before
}

// ---------------------------------------------------------------- window state

export type WindowState =
  /** No window names a tag of the machine: activate at once. */
  | { kind: 'none' }
  | { kind: 'open' }
  /** Activation waits until `opensAt` (ms since the epoch). */
  | { kind: 'closed'; opensAt: number }

const minutesOf = (clock: string): number => Number(clock.slice(0, 2)) * 60 + Number(clock.slice(3, 5))

/**
 * Whether a machine with `tags` may activate at `nowMs` in `timeZone`: open
 * while any window of its tags is, else closed until the next one opens.
 *
 * Time-zone changes (DST): a window opens at its start in local time, found as
 * instantOf says, and then lasts as long as written in real time (22:00-04:00
 * is six hours), so the day the clocks change neither loses nor doubles the
 * window: 02:00-03:00 on the night the clocks skip from 02:00 to 03:00 opens
 * at the jump and lasts an hour; on the night they go back it closes an hour
 * after the first 02:00.
 */
export function windowState(
  windows: readonly MaintenanceWindow[],
  tags: readonly string[],
  nowMs: number,
  timeZone: string,
): WindowState {
  const mine = windows.filter((w) => tags.includes(w.tag))
  if (mine.length === 0) return { kind: 'none' }
  // Today's local date, as a UTC midnight so days can be counted with Date.UTC.
  const local = nowMs + offsetAt(nowMs, timeZone)
  const today = local - (((local % DAY) + DAY) % DAY)
  let opensAt = Number.POSITIVE_INFINITY
  // A window opened yesterday may still be open; any window opens again within a week.
  for (let d = -2; d <= 8; d++) {
    const date = today + d * DAY
    const weekday = WEEKDAYS[new Date(date).getUTCDay()] as Weekday
    for (const w of mine) {
      if (w.days !== undefined && !w.days.includes(weekday)) continue
      const start = minutesOf(w.start)
      const length = (minutesOf(w.end) - start + 1440) % 1440 || 1440
      const opens = instantOf(date + start * 60_000, timeZone)
      if (opens <= nowMs && nowMs < opens + length * 60_000) return { kind: 'open' }
      if (opens > nowMs) opensAt = Math.min(opensAt, opens)
    }
  }
  return { kind: 'closed', opensAt }
}
