import { describe, expect, it } from 'vitest'
import { verifyManifest } from '../../agent/verify.ts'
import { issueCertificate } from '../../keys/certificate.ts'
import { CertificateMemo } from '../../keys/certificate-memo.ts'
import { DOMAINS } from '../../keys/domains.ts'
import { PrivateKey } from '../../keys/identity.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import { type ManifestRefusalCode, ManifestRefusedError } from '../../protocol/manifest.ts'
import { statusReportSchema } from '../../protocol/messages.ts'
import { countVerifies } from '../../testkit/verify-count.ts'
import { HOUR, makeFleet } from './fixtures.ts'

const fleet = makeFleet()
const ctx = { ...fleet.trust, lastSequence: 4 }

function refusal(envelope: Uint8Array, context = ctx): { code: ManifestRefusalCode; message: string } {
  try {
    verifyManifest(envelope, context)
  } catch (err) {
    if (err instanceof ManifestRefusedError) return { code: err.code, message: err.message }
    throw err
  }
  throw new Error('manifest was accepted')
}

describe('verifyManifest', () => {
  it('accepts a valid manifest targeted by name or by tag', () => {
    const byName = fleet.manifest({ sequence: 5 })
    const verified = verifyManifest(fleet.sign(byName), ctx)
    expect(verified.manifest.id).toBe(byName.id)
    expect(verified.adminName).toBe('alice')
    expect(verified.signer.equals(fleet.admin.publicKey)).toBe(true)

    const byTag = fleet.manifest({ sequence: 5, targets: { machines: [], tags: ['lab'] } })
    expect(verifyManifest(fleet.sign(byTag), ctx).manifest.id).toBe(byTag.id)
  })

  it("with the agent's signature memo, verifies its admin's certificate once across manifests", () => {
    const memo = { ...ctx, certificates: new CertificateMemo() }
    const [first, second] = [5, 6].map((sequence) => fleet.sign(fleet.manifest({ sequence })))
    const verifies = countVerifies()
    try {
      verifyManifest(first as Uint8Array, memo)
      const once = verifies.count
      verifyManifest(second as Uint8Array, memo)
      // the second costs its envelope's signature only: the chain's links were verified with the first
      expect(verifies.count - once).toBe(1)
      expect(once).toBeGreaterThan(1)
    } finally {
      verifies.restore()
    }
  })

  it('refuses bytes that are not a manifest envelope (bad-envelope)', () => {
    expect(refusal(new Uint8Array([1, 2, 3])).code).toBe('bad-envelope')
    const status = sealEnvelope(
      statusReportSchema,
      DOMAINS.status,
      {
        v: 1,
        machine: 'edge-1',
        seq: 1,
        state: 'idle',
        currentGeneration: null,
        desiredGeneration: null,
        manifestId: null,
        manifestSequence: null,
        rolloutId: null,
        progress: null,
        error: null,
        facts: {},
        timestamp: Date.now(),
      },
      fleet.admin,
    )
    const r = refusal(status)
    expect(r.code).toBe('bad-envelope')
    expect(r.message).toMatch(/wrong-domain/)
  })

  it('refuses a signer without a valid deploy certificate (unauthorised)', () => {
    const m = fleet.manifest({ sequence: 5 })
    const stranger = PrivateKey.generate()
    expect(refusal(fleet.sign(m, { signer: stranger })).code).toBe('unauthorised')

    const otherRoot = PrivateKey.generate()
    const foreign = issueCertificate(otherRoot, {
      subject: fleet.admin.publicKey,
      name: 'mallory',
      capabilities: ['deploy'],
      scope: { all: true },
      notAfter: Date.now() + HOUR,
    })
    const r = refusal(fleet.sign(m, { chain: [foreign] }))
    expect(r.code).toBe('unauthorised')
    expect(r.message).toMatch(/root key/)

    const readOnly = issueCertificate(fleet.root, {
      subject: fleet.admin.publicKey,
      name: 'reader',
      capabilities: ['read'],
      scope: { all: true },
      notAfter: Date.now() + HOUR,
    })
    expect(refusal(fleet.sign(m, { chain: [readOnly] })).code).toBe('unauthorised')

    const otherScope = issueCertificate(fleet.root, {
      subject: fleet.admin.publicKey,
      name: 'prod-only',
      capabilities: ['deploy'],
      scope: { machines: [], tags: ['prod'] },
      notAfter: Date.now() + HOUR,
    })
    expect(refusal(fleet.sign(m, { chain: [otherScope] })).message).toMatch(/does not cover/)

    const serial = 'a'.repeat(32)
    const revocable = issueCertificate(fleet.root, {
      subject: fleet.admin.publicKey,
      name: 'alice',
      capabilities: ['deploy'],
      scope: { all: true },
      notAfter: Date.now() + HOUR,
      serial,
    })
    const revoked = refusal(fleet.sign(m, { chain: [revocable] }), {
      ...ctx,
      revokedSerials: new Set([serial]),
    })
    expect(revoked.code).toBe('revoked')
    expect(revoked.message).toMatch(/revoked/)
  })

  it('refuses a manifest for another fleet (wrong-fleet)', () => {
    const r = refusal(fleet.sign(fleet.manifest({ sequence: 5, fleetId: 'globex' })))
    expect(r.code).toBe('wrong-fleet')
    expect(r.message).toMatch(/"globex".*"acme"/)
  })

  it('refuses a manifest that does not target this machine (not-targeted)', () => {
    const m = fleet.manifest({ sequence: 5, targets: { machines: ['edge-2'], tags: ['other'] } })
    // A signer allowed to deploy anywhere, so the target is what is refused.
    const everywhere = issueCertificate(fleet.root, {
      subject: fleet.admin.publicKey,
      name: 'alice',
      capabilities: ['deploy'],
      scope: { all: true },
      notAfter: Date.now() + HOUR,
    })
    expect(refusal(fleet.sign(m, { chain: [everywhere] })).code).toBe('not-targeted')
  })

  it('refuses a manifest outside its validity window (not-yet-valid, expired)', () => {
    const now = Date.now()
    const early = fleet.manifest({ sequence: 5, notBefore: now + HOUR, expiresAt: now + 2 * HOUR })
    expect(refusal(fleet.sign(early)).code).toBe('not-yet-valid')
    const late = fleet.manifest({ sequence: 5, notBefore: now - 2 * HOUR, expiresAt: now - HOUR })
    const r = refusal(fleet.sign(late))
    expect(r.code).toBe('expired')
    expect(r.message).toMatch(/fresh manifest/)
  })

  it('refuses a sequence at or below the last attempted one (replayed)', () => {
    expect(refusal(fleet.sign(fleet.manifest({ sequence: 4 }))).code).toBe('replayed')
    expect(refusal(fleet.sign(fleet.manifest({ sequence: 1 }))).code).toBe('replayed')
  })

  it('carries the decoded manifest on refusals after the envelope opened', () => {
    const m = fleet.manifest({ sequence: 2 })
    try {
      verifyManifest(fleet.sign(m), ctx)
      expect.unreachable()
    } catch (err) {
      expect((err as ManifestRefusedError).manifest?.id).toBe(m.id)
      expect((err as ManifestRefusedError).name).toBe('ManifestRefusedError')
    }
  })
})
