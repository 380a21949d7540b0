// `fleetmesh admin grant | install | revoke` as the README writes them, as real
// processes (no coordinator needed): grant without --name, the serial that
// revoke needs, install from a file, and revoke's usage.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { runCli, TestFleet } from '../../testkit/harness.ts'

let fleet: TestFleet
let other: string
beforeEach(async () => {
  fleet = await TestFleet.create()
  other = await mkdtemp(join(fleet.dir, 'other-'))
})
afterEach(async () => {
  await rm(other, { recursive: true, force: true })
  await fleet.stop()
})

async function otherKey(): Promise<string> {
  const r = await runCli(['--home', other, 'admin', 'keygen', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return (JSON.parse(r.stdout) as { publicKey: string }).publicKey
}

describe('admin grant', () => {
  it('works as the README writes it, naming the certificate after the key and printing its serial', async () => {
    const key = await otherKey()
    const r = await fleet.cli(['admin', 'grant', '--subject', key, '--caps', 'read', '--all'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`Certificate for "admin-${key.slice(0, 8)}"`)
    expect(r.stdout).toMatch(/serial [0-9a-f]{32}/)
    expect(r.stdout).toMatch(/fleetmesh admin revoke [0-9a-f]{32}/)
  })

  it('gives the serial, name and bundle in --json', async () => {
    const key = await otherKey()
    const out = await fleet.json<{ bundle: string; serial: string; name: string; capabilities: string[] }>([
      'admin',
      'grant',
      '--subject',
      key,
      '--name',
      'bob',
      '--caps',
      'read',
      '--all',
    ])
    expect(out.serial).toMatch(/^[0-9a-f]{32}$/)
    expect(out.name).toBe('bob')
    expect(out.capabilities).toEqual(['read'])
    expect(out.bundle.startsWith('fmadmin1.')).toBe(true)
  })
})

describe('admin install', () => {
  it('takes a file holding the bundle as well as the pasted text', async () => {
    const key = await otherKey()
    const { bundle } = await fleet.json<{ bundle: string }>([
      'admin',
      'grant',
      '--subject',
      key,
      '--caps',
      'read',
      '--all',
    ])
    const file = join(other, 'bundle.txt')
    await writeFile(file, `${bundle}\n`)
    const fromFile = await runCli(['--home', other, 'admin', 'install', file])
    expect(fromFile.code, fromFile.stderr).toBe(0)
    expect(fromFile.stdout).toContain(`certificate "admin-${key.slice(0, 8)}" (read)`)
    const pasted = await runCli(['--home', other, 'admin', 'install', bundle])
    expect(pasted.code, pasted.stderr).toBe(0)
  })

  it('says what it expected for neither a bundle nor a file', async () => {
    await otherKey()
    const r = await runCli(['--home', other, 'admin', 'install', join(other, 'missing.txt')])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('is neither a fmadmin1.… bundle nor an existing file')
  })
})

describe('admin revoke', () => {
  it('does not claim --reason is required', async () => {
    const r = await fleet.cli(['admin', 'revoke', '--bogus'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('[--reason "<why>"]')
  })
})
