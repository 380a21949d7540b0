// "Did you mean": edit distance, and when a word counts as a typo of a known one.
import { describe, expect, it } from 'vitest'
import {
  type CommandSpec,
  closest,
  duration,
  editDistance,
  parseCommand,
  suggestion,
  UsageError,
} from '../../lib/cli.ts'

describe('editDistance', () => {
  it('counts single-character edits', () => {
    expect(editDistance('deploy', 'deploy')).toBe(0)
    expect(editDistance('depoly', 'deploy')).toBe(2)
    expect(editDistance('--helth-check', '--health-check')).toBe(1)
    expect(editDistance('', 'abc')).toBe(3)
  })
})

describe('closest', () => {
  const known = ['init', 'enroll', 'deploy', 'watch', 'machines']
  it('picks the nearest known word for a typo', () => {
    expect(closest('depoly', known)).toBe('deploy')
    expect(closest('machine', known)).toBe('machines')
  })
  it('suggests nothing for an unrelated word', () => {
    expect(closest('kubernetes', known)).toBeUndefined()
    expect(suggestion('kubernetes', known)).toBe('')
  })
})

describe('option values that start with a dash', () => {
  const spec: CommandSpec = {
    name: 'admin grant',
    summary: '',
    usage: 'fleetmesh admin grant --subject <key> [--name <name>] [--all]',
    options: {
      subject: { type: 'string', description: 'key' },
      name: { type: 'string', description: 'name' },
      all: { type: 'boolean', description: 'all' },
    },
    examples: [],
  }
  // one base64url public key in 64 begins with '-': keygen prints it, grant must take it
  it('takes a value that begins with a dash as the value', () => {
    const p = parseCommand(['--subject', '-Xb3kQ', '--all'], spec)
    expect(p.values.subject).toBe('-Xb3kQ')
    expect(p.values.all).toBe(true)
  })
  it('still reads a known option after a string option as an option', () => {
    expect(() => parseCommand(['--subject', '--all'], spec)).toThrow(UsageError)
  })
})

describe('durations', () => {
  const spec: CommandSpec = {
    name: 'coordinator',
    summary: '',
    usage: 'fleetmesh coordinator [--grace <duration>]',
    options: { grace: { type: 'string', description: 'grace' } },
    examples: [],
  }
  const grace = (v: string) => duration(parseCommand(['--grace', v], spec), 'grace', 5)
  it('reads units, a bare 0, and refuses what is not a duration or too long to be exact', () => {
    expect(grace('90s')).toBe(90_000)
    expect(grace('0')).toBe(0)
    expect(() => grace('10')).toThrow(/--grace must be a duration/)
    expect(() => grace('99999999999999999d')).toThrow(/--grace is too long/)
  })
})
