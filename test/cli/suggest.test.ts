// "Did you mean": edit distance, and when a word counts as a typo of a known one.
import { describe, expect, it } from 'vitest'
import { closest, editDistance, suggestion } from '../../lib/cli.ts'

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
