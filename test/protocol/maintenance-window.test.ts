// Maintenance windows: the text forms operators write, the schema manifests carry,
// and the window math on fixed instants in several time zones, over midnight and
// across the days the clocks change.
import { describe, expect, it } from 'vitest'
import {
  buildManifest,
  MAX_WINDOWS,
  type MaintenanceWindow,
  manifestSchema,
  parseWindowArg,
  parseWindowSpec,
  WindowSyntaxError,
  windowState,
} from '../../protocol/index.ts'

const at = (iso: string) => Date.parse(iso)
const w = (text: string): MaintenanceWindow => parseWindowArg(text)

describe('parsing windows', () => {
  it('reads tag, times and days, with ranges that may wrap around the week', () => {
    expect(w('lab=22:00-04:00')).toEqual({ tag: 'lab', start: '22:00', end: '04:00' })
    expect(w('lab=01:00-05:00@sat,sun').days).toEqual(['sat', 'sun'])
    expect(w('lab=22:00-02:00@mon-fri').days).toEqual(['mon', 'tue', 'wed', 'thu', 'fri'])
    expect(w('lab=22:00-02:00@fri-mon').days).toEqual(['fri', 'sat', 'sun', 'mon'])
    expect(parseWindowSpec('edge.a', '00:00-00:00@SUN')).toEqual({
      tag: 'edge.a',
      start: '00:00',
      end: '00:00',
      days: ['sun'],
    })
  })

  it.each([
    ['22:00-04:00', /expected "<tag>="/],
    ['lab=22:00', /expected "HH:MM-HH:MM"/],
    ['lab=25:00-04:00', /the start "25:00" is not a time of day/],
    ['lab=22:00-4:00', /the end "4:00" is not a time of day/],
    ['lab=22:00-04:00@funday', /"funday" is not a day; use sun, mon/],
    ['lab=22:00-04:00@mon,mon-tue', /"mon" is named twice/],
    ['Lab=22:00-04:00', /"Lab" is not a tag name/],
  ])('refuses %s, saying what is wrong', (text, message) => {
    const err = (() => {
      try {
        parseWindowArg(text)
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(WindowSyntaxError)
    expect((err as Error).message).toMatch(message)
  })
})

describe('windows in the manifest', () => {
  const base = {
    fleetId: 'acme',
    sequence: 1,
    generation: 'app-1',
    targets: { machines: [], tags: ['lab'] },
    payload: {
      kind: 'archive' as const,
      sha256: 'a'.repeat(64),
      size: 1,
      sources: [{ kind: 'coordinator' as const }],
    },
  }

  it('are optional, left out when empty, and bounded', () => {
    expect(manifestSchema.safeParse(buildManifest(base)).success).toBe(true)
    expect('windows' in buildManifest({ ...base, windows: [] })).toBe(false)
    const one = buildManifest({ ...base, windows: [w('lab=22:00-04:00@mon')] })
    expect(manifestSchema.parse(one).windows).toEqual([w('lab=22:00-04:00@mon')])
    const many = buildManifest({
      ...base,
      windows: Array.from({ length: MAX_WINDOWS + 1 }, () => w('lab=01:00-02:00')),
    })
    expect(manifestSchema.safeParse(many).success).toBe(false)
    const bad = { ...one, windows: [{ tag: 'lab', start: '24:00', end: '01:00' }] }
    expect(manifestSchema.safeParse(bad).success).toBe(false)
  })
})

describe('windowState', () => {
  it('is "none" when no window names a tag of the machine', () => {
    expect(windowState([w('lab=22:00-04:00')], ['web'], at('2026-03-10T12:00:00Z'), 'UTC')).toEqual({
      kind: 'none',
    })
    expect(windowState([], ['lab'], at('2026-03-10T12:00:00Z'), 'UTC')).toEqual({ kind: 'none' })
  })

  it('spans midnight when the end is before the start (UTC)', () => {
    const win = [w('lab=22:00-04:00')]
    const state = (iso: string) => windowState(win, ['lab'], at(iso), 'UTC')
    expect(state('2026-03-10T23:00:00Z')).toEqual({ kind: 'open' })
    expect(state('2026-03-11T03:59:59Z')).toEqual({ kind: 'open' })
    expect(state('2026-03-11T04:00:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-03-11T22:00:00Z') })
    expect(state('2026-03-10T12:00:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-03-10T22:00:00Z') })
    expect(state('2026-03-10T22:00:00Z')).toEqual({ kind: 'open' })
  })

  it('opens only on its days; a window opened on its day runs on past midnight', () => {
    const win = [w('lab=22:00-02:00@fri')]
    const state = (iso: string) => windowState(win, ['lab'], at(iso), 'UTC')
    // 2026-03-13 is a Friday
    expect(state('2026-03-14T01:00:00Z')).toEqual({ kind: 'open' })
    expect(state('2026-03-14T23:00:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-03-20T22:00:00Z') })
    expect(state('2026-03-13T21:00:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-03-13T22:00:00Z') })
  })

  it('reads the days and times in the machine time zone (America/New_York)', () => {
    const win = [w('lab=09:00-17:00@mon-fri')]
    const state = (iso: string) => windowState(win, ['lab'], at(iso), 'America/New_York')
    // Friday 2026-07-03 16:00 EDT (UTC-4): open; 18:00 EDT: closed until Monday 09:00 EDT
    expect(state('2026-07-03T20:00:00Z')).toEqual({ kind: 'open' })
    expect(state('2026-07-03T22:00:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-07-06T13:00:00Z') })
    // the same instant is Saturday 07:00 in Tokyo: no window on weekends there
    expect(windowState(win, ['lab'], at('2026-07-03T22:00:00Z'), 'Asia/Tokyo')).toEqual({
      kind: 'closed',
      opensAt: at('2026-07-06T00:00:00Z'),
    })
  })

  it('is open inside any of several windows of the machine, else waits for the earliest', () => {
    const win = [w('lab=22:00-23:00'), w('edge=12:00-13:00'), w('web=00:00-23:59')]
    expect(windowState(win, ['lab', 'edge'], at('2026-03-10T12:30:00Z'), 'UTC')).toEqual({ kind: 'open' })
    expect(windowState(win, ['lab', 'edge'], at('2026-03-10T13:30:00Z'), 'UTC')).toEqual({
      kind: 'closed',
      opensAt: at('2026-03-10T22:00:00Z'),
    })
  })

  it('keeps its length on the night the clocks go forward (Europe/Berlin, 2026-03-29)', () => {
    // 02:00 CET jumps to 03:00 CEST at 01:00Z: a 02:00-03:00 window opens at the jump, for an hour
    const win = [w('lab=02:00-03:00')]
    const state = (iso: string) => windowState(win, ['lab'], at(iso), 'Europe/Berlin')
    expect(state('2026-03-28T23:30:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-03-29T01:00:00Z') })
    expect(state('2026-03-29T01:30:00Z')).toEqual({ kind: 'open' })
    expect(state('2026-03-29T02:00:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-03-30T00:00:00Z') })
    // a window over midnight that night is 6 real hours long: 22:00 CET to 05:00 CEST
    const night = [w('lab=22:00-04:00')]
    expect(windowState(night, ['lab'], at('2026-03-29T02:59:00Z'), 'Europe/Berlin')).toEqual({ kind: 'open' })
    expect(windowState(night, ['lab'], at('2026-03-29T03:00:00Z'), 'Europe/Berlin')).toEqual({
      kind: 'closed',
      opensAt: at('2026-03-29T20:00:00Z'),
    })
  })

  it('does not open twice on the night the clocks go back (Europe/Berlin, 2026-10-25)', () => {
    // 03:00 CEST goes back to 02:00 CET at 01:00Z: the window opens at the first 02:00 and lasts an hour
    const win = [w('lab=02:00-03:00')]
    const state = (iso: string) => windowState(win, ['lab'], at(iso), 'Europe/Berlin')
    expect(state('2026-10-24T23:30:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-10-25T00:00:00Z') })
    expect(state('2026-10-25T00:30:00Z')).toEqual({ kind: 'open' })
    expect(state('2026-10-25T01:30:00Z')).toEqual({ kind: 'closed', opensAt: at('2026-10-26T01:00:00Z') })
  })
})
