// The audit table's text: DETAIL cut at a word boundary, actors named by the
// certificate they signed with (and only when the coordinator accepted it).
import { describe, expect, it } from 'vitest'
import { actorNames, auditTable } from '../../admin/commands/audit.ts'
import { truncateAtWord } from '../../admin/format.ts'
import { DOMAINS, issueCertificate, PrivateKey } from '../../keys/index.ts'
import { type AuditRecord, adminRequestSchema, sealEnvelope } from '../../protocol/index.ts'

describe('truncateAtWord', () => {
  it('keeps text that fits and cuts longer text after a whole word, with an ellipsis', () => {
    expect(truncateAtWord('short detail', 80)).toBe('short detail')
    const cut = truncateAtWord('manifest seq 7 for machines edge-1, edge-2 and tags lab', 32)
    expect(cut).toBe('manifest seq 7 for machines…')
    expect(cut.length).toBeLessThanOrEqual(32)
  })

  it('cuts a single overlong word where it must', () => {
    expect(truncateAtWord('a'.repeat(50), 10)).toBe(`${'a'.repeat(9)}…`)
  })
})

describe('auditTable', () => {
  const row = ['1', '2026-11-29T00:00:00.000Z', 'ok', 'submit-manifest', 'owner', 'word '.repeat(40).trim()]
  it('fits DETAIL to the terminal width, cut at a word', () => {
    const line = auditTable([row], 120).split('\n')[1] ?? ''
    expect(line.length).toBeLessThanOrEqual(120)
    expect(line.endsWith('word…')).toBe(true)
  })
  it('uses 80 characters of DETAIL without a terminal', () => {
    const line = auditTable([row]).split('\n')[1] ?? ''
    expect(line.slice(line.indexOf('word')).length).toBeLessThanOrEqual(80)
  })
})

describe('actorNames', () => {
  const root = PrivateKey.generate()
  const alice = PrivateKey.generate()
  const cert = issueCertificate(root, {
    subject: alice.publicKey,
    name: 'alice',
    capabilities: ['read'],
    scope: { all: true },
    notAfter: Date.now() + 60_000,
  })
  const request = (signer: PrivateKey) =>
    sealEnvelope(
      adminRequestSchema,
      DOMAINS.adminRequest,
      { v: 1, nonce: '00'.repeat(16), issuedAt: Date.now(), body: { op: 'machines' } },
      signer,
      [cert],
    )
  const record = (actor: PrivateKey, outcome: AuditRecord['outcome']): AuditRecord => ({
    index: 1,
    at: 0,
    peerId: 'peer',
    actor: actor.publicKey.toString(),
    action: 'machines',
    outcome,
    detail: '',
    request: request(actor),
    prevHash: new Uint8Array(32),
    hash: new Uint8Array(32),
    sig: new Uint8Array(64),
  })

  it("names an admin by its accepted certificate's name", () => {
    expect(actorNames([record(alice, 'ok')]).get(alice.publicKey.toString())).toBe('alice')
  })

  it('never names a key by a certificate issued to another key, nor from a refused request', () => {
    const mallory = PrivateKey.generate()
    expect(actorNames([record(mallory, 'ok'), record(alice, 'denied')]).size).toBe(0)
  })
})
