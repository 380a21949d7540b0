/**
 * The agent's side of tag records (agent/enroll.ts `Enrollment.takeTags`): it
 * runs the same rules as the coordinator against its own tags and version, writes
 * the new tags to enrollment.json before anything uses them, takes the record the
 * coordinator sends on every connect as the one it has, and leaves its tags (in
 * memory and on disk) as they were when it refuses one.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Enrollment, type EnrollmentFile } from '../../agent/enroll.ts'
import { issueCertificate, PrivateKey, type Scope } from '../../keys/index.ts'
import { writeJsonAtomic } from '../../lib/index.ts'
import { type MachineTags, MachineTagsRefusedError, sealMachineTags } from '../../protocol/index.ts'
import { hex } from '../../testkit/fixtures.ts'

const HOUR = 3_600_000
const root = PrivateKey.generate()
const admin = PrivateKey.generate()
const chainFor = (scope: Scope) => [
  issueCertificate(root, {
    subject: admin.publicKey,
    name: 'alice',
    capabilities: ['enroll'],
    scope,
    notBefore: Date.now() - HOUR,
    notAfter: Date.now() + HOUR,
    serial: hex(16),
  }),
]
const trust = { fleetRoot: root.publicKey, fleetId: 'acme' }
const seal = (r: Partial<MachineTags>, scope: Scope = { all: true }) =>
  sealMachineTags(
    { v: 1, fleetId: 'acme', machine: 'edge-1', tags: ['eu'], version: 1, issuedAt: Date.now(), ...r },
    admin,
    chainFor(scope),
  )

let dir: string
let file: string
let enrollment: Enrollment
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-tags-'))
  file = join(dir, 'enrollment.json')
  const initial: EnrollmentFile = {
    fleetId: 'acme',
    fleetRoot: root.publicKey.toString(),
    machine: 'edge-1',
    tags: ['lab'],
    coordinator: { peerId: 'x', addrs: [] },
    enrolledAt: 1,
  }
  await writeJsonAtomic(file, initial, 0o600)
  enrollment = new Enrollment(file, initial)
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

const onDisk = async () => JSON.parse(await readFile(file, 'utf8')) as EnrollmentFile

describe('Enrollment.takeTags', () => {
  it('takes a valid record, persists it, and takes the same record again as current', async () => {
    const v1 = seal({ tags: ['eu', 'lab'] })
    const taken = await enrollment.takeTags(v1, trust)
    expect(taken).toMatchObject({ added: ['eu'], removed: [] })
    expect(enrollment.current).toMatchObject({ tags: ['eu', 'lab'], tagsVersion: 1 })
    expect(await onDisk()).toMatchObject({ tags: ['eu', 'lab'], tagsVersion: 1 })
    expect(await enrollment.takeTags(v1, trust)).toBe('current')
  })

  it('refuses a replayed older record and one outside the signer scope, changing nothing', async () => {
    const v1 = seal({ tags: ['lab'], version: 1 })
    await enrollment.takeTags(seal({ tags: ['eu', 'lab'], version: 2 }), trust)
    const replay = await enrollment.takeTags(v1, trust).catch((err: unknown) => err)
    expect(replay).toBeInstanceOf(MachineTagsRefusedError)
    expect(replay).toMatchObject({ code: 'stale-version' })
    // a lab admin cannot move this machine (now also "eu") anywhere
    const lab = seal({ tags: ['lab'], version: 3 }, { machines: [], tags: ['lab'] })
    await expect(enrollment.takeTags(lab, trust)).rejects.toMatchObject({ code: 'old-tags-out-of-scope' })
    expect(enrollment.current).toMatchObject({ tags: ['eu', 'lab'], tagsVersion: 2 })
    expect(await onDisk()).toMatchObject({ tags: ['eu', 'lab'], tagsVersion: 2 })
  })

  it('refuses a record for another machine or fleet', async () => {
    await expect(enrollment.takeTags(seal({ machine: 'edge-2' }), trust)).rejects.toMatchObject({
      code: 'wrong-machine',
    })
    await expect(enrollment.takeTags(seal({ fleetId: 'other' }), trust)).rejects.toMatchObject({
      code: 'wrong-fleet',
    })
    expect((await onDisk()).tags).toEqual(['lab'])
  })
})
