import { describe, expect, it } from 'vitest'
import { DEPLOY_COMMAND } from '../../admin/commands/deploy-options.ts'
import { wavePolicy } from '../../admin/commands/deploy-wave-options.ts'
import { parseCommand, UsageError } from '../../lib/index.ts'

const policy = (...args: string[]) =>
  wavePolicy(parseCommand(['app.tar.gz', '--to', 'all', ...args], DEPLOY_COMMAND))

describe('deploy --waves options', () => {
  it('without --waves the deploy goes to every target at once', () => {
    expect(policy()).toBeUndefined()
  })

  it('parses the policy with its defaults', () => {
    expect(policy('--waves', '1,10%,100%')).toEqual({
      waves: [{ count: 1 }, { percent: 10 }, { percent: 100 }],
      maxFailures: { count: 0 },
      soakMs: 0,
      onFailure: 'halt',
      canaryTag: null,
      offlineTimeoutMs: 600_000,
    })
    expect(
      policy(
        '--waves',
        '5%',
        '--max-failures',
        '2%',
        '--soak',
        '10m',
        '--on-failure',
        'rollback',
        '--canary-tag',
        'lab',
      ),
    ).toMatchObject({ maxFailures: { percent: 2 }, soakMs: 600_000, onFailure: 'rollback', canaryTag: 'lab' })
  })

  it.each([
    [['--waves', '0,100%'], /--waves takes counts/],
    [['--waves', '1,abc'], /--waves takes counts/],
    [['--waves', '150%'], /--waves takes counts/],
    [['--waves', '1', '--max-failures', 'x'], /--max-failures takes/],
    [['--waves', '1', '--on-failure', 'retry'], /--on-failure must be halt or rollback/],
    [['--waves', '1', '--canary-tag', 'Bad Tag!'], /--canary-tag "Bad Tag!" is not a tag name/],
    [['--waves', '1', '--offline-timeout', '0'], /--offline-timeout must be from 1s/],
    [['--soak', '10m'], /--soak goes with --waves/],
  ])('refuses %j before anything is uploaded', (args, message) => {
    expect(() => policy(...args)).toThrow(UsageError)
    expect(() => policy(...args)).toThrow(message)
  })
})
