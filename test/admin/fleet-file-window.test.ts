// The fleet file's `windows` section: maintenance windows by tag, as a string or
// a list, read into what manifests carry; a bad one is an error naming the file,
// the line and the field.
import { describe, expect, it } from 'vitest'
import { FleetFileError, parseFleetFile } from '../../admin/fleet-file.ts'

function failure(text: string): FleetFileError {
  try {
    parseFleetFile('fleet.json', text)
  } catch (err) {
    if (err instanceof FleetFileError) return err
    throw err
  }
  throw new Error('the file was accepted')
}

describe('fleet file windows', () => {
  it('reads one window or a list per tag; none when the section is absent', () => {
    const file = parseFleetFile(
      'fleet.json',
      '{"machines": {"web-1": {"tags": ["web"]}},\n "windows": {"web": "22:00-04:00@mon-fri", "db": ["01:00-02:00", "13:00-14:00@sun"]}}',
    )
    expect(file.windows).toEqual([
      { tag: 'web', start: '22:00', end: '04:00', days: ['mon', 'tue', 'wed', 'thu', 'fri'] },
      { tag: 'db', start: '01:00', end: '02:00' },
      { tag: 'db', start: '13:00', end: '14:00', days: ['sun'] },
    ])
    expect(parseFleetFile('fleet.json', '{"machines": {}}').windows).toEqual([])
  })

  it.each([
    [
      'a bad time',
      '{\n  "machines": {},\n  "windows": {\n    "web": "22:00-24:00"\n  }\n}',
      4,
      'windows.web',
      /the end "24:00"/,
    ],
    [
      'a bad day in a list',
      '{\n  "machines": {},\n  "windows": {\n    "web": [\n      "22:00-04:00",\n      "01:00-02:00@someday"\n    ]\n  }\n}',
      6,
      'windows.web[1]',
      /"someday" is not a day/,
    ],
    [
      'a bad tag',
      '{\n  "machines": {},\n  "windows": {\n    "Web": "22:00-04:00"\n  }\n}',
      4,
      'windows.Web',
      /not a valid name/,
    ],
    [
      'a number',
      '{\n  "machines": {},\n  "windows": {\n    "web": 22\n  }\n}',
      4,
      'windows.web',
      /HH:MM-HH:MM/,
    ],
  ])('refuses %s at its line and field', (_what, text, line, field, message) => {
    const err = failure(text)
    expect(err.line).toBe(line)
    expect(err.field).toBe(field)
    expect(err.message).toMatch(message)
    expect(err.message.startsWith(`fleet.json:${line}:`)).toBe(true)
  })
})
