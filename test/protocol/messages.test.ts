import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CertificateError, DOMAINS, decodeCanonical, encodeCanonical, verifyChain } from '../../keys/index.ts'
import { decodeMessage, encodeMessage, MessageDecodeError } from '../../protocol/codec.ts'
import { EnvelopeError, openEnvelope, sealEnvelope } from '../../protocol/envelope.ts'
import {
  adminRequestSchema,
  controlFrameSchema,
  enrollRequestSchema,
  MAX_ENVELOPE_BYTES,
  manifestSchema,
  statusReportSchema,
} from '../../protocol/messages.ts'
import {
  certifiedAdmin,
  nixManifest,
  sampleAdminRequests,
  sampleControlFrames,
  sampleEnroll,
  sampleManifest,
  sampleStatus,
} from '../../testkit/fixtures.ts'

const MAX = MAX_ENVELOPE_BYTES

describe('round trips', () => {
  it('every message type encodes and decodes to an equal value', () => {
    const cases: [string, Parameters<typeof decodeMessage>[0], unknown][] = [
      ['manifest', manifestSchema, sampleManifest()],
      ['nix manifest', manifestSchema, nixManifest()],
      ['status', statusReportSchema, sampleStatus()],
      [
        'failed status',
        statusReportSchema,
        sampleStatus({ state: 'rolled-back', error: { code: 'health', message: 'exit 1' } }),
      ],
      ['enroll', enrollRequestSchema, sampleEnroll()],
      ...sampleAdminRequests().map((r): [string, typeof adminRequestSchema, unknown] => [
        `admin ${r.body.op}`,
        adminRequestSchema,
        r,
      ]),
      ...sampleControlFrames().map((f): [string, typeof controlFrameSchema, unknown] => [
        `control ${f.t}`,
        controlFrameSchema,
        f,
      ]),
    ]
    for (const [name, schema, value] of cases) {
      const bytes = encodeMessage(schema, value as never)
      expect(decodeMessage(schema, bytes, name, MAX), name).toEqual(value)
    }
  })

  it('names the path of a bad field', () => {
    const bad = { ...sampleManifest(), targets: { machines: ['Not A Hostname'], tags: [] } }
    const err = (() => {
      try {
        decodeMessage(manifestSchema, encodeCanonical(bad), 'manifest', MAX)
      } catch (e) {
        return e as MessageDecodeError
      }
    })()
    expect(err).toBeInstanceOf(MessageDecodeError)
    expect(err?.message).toContain('targets.machines.0')
  })

  it('rejects activation modes that do not fit the payload', () => {
    const bad = sampleManifest({ activation: 'switch' })
    expect(() => encodeMessage(manifestSchema, bad)).toThrow(/activation/)
  })
})

describe('signed envelopes', () => {
  const { root, admin, chain } = certifiedAdmin({
    capabilities: ['deploy'],
    scope: { machines: [], tags: ['lab'] },
  })

  it('opens what was sealed and carries the chain', () => {
    const m = sampleManifest()
    const env = sealEnvelope(manifestSchema, DOMAINS.manifest, m, admin, chain)
    const opened = openEnvelope(manifestSchema, DOMAINS.manifest, env)
    expect(opened.value).toEqual(m)
    expect(opened.signer.equals(admin.publicKey)).toBe(true)
    const authority = verifyChain(opened.chain, {
      root: root.publicKey,
      signer: opened.signer,
      capability: 'deploy',
      target: { kind: 'machine', name: 'edge-9', tags: ['lab'] },
    })
    expect(authority.leaf.name).toBe('ops')
  })

  it('a flipped bit in payload, signature or certificate is caught', () => {
    const env = sealEnvelope(manifestSchema, DOMAINS.manifest, sampleManifest(), admin, chain)
    let accepted = 0
    for (let i = 0; i < env.byteLength; i++) {
      const bad = Uint8Array.from(env)
      bad[i] = (bad[i] as number) ^ 0x04
      try {
        const opened = openEnvelope(manifestSchema, DOMAINS.manifest, bad)
        // Only a flip inside the certificate can open: its own signature must then fail.
        verifyChain(opened.chain, { root: root.publicKey, signer: opened.signer, capability: 'deploy' })
        accepted++
      } catch (err) {
        expect(err instanceof EnvelopeError || err instanceof CertificateError).toBe(true)
      }
    }
    expect(accepted).toBe(0)
  })

  it('a signature made for one domain is rejected in another', () => {
    const status = sampleStatus()
    const env = sealEnvelope(statusReportSchema, DOMAINS.status, status, admin)
    expect(() => openEnvelope(statusReportSchema, DOMAINS.manifest, env)).toThrow(EnvelopeError)
    // Even with the domain field rewritten, the signature (which covers the domain) fails.
    const outer = decodeCanonical(env, MAX) as Record<string, unknown>
    const forged = encodeCanonical({ ...outer, domain: DOMAINS.manifest })
    const err = (() => {
      try {
        openEnvelope(statusReportSchema, DOMAINS.manifest, forged)
      } catch (e) {
        return e as EnvelopeError
      }
    })()
    expect(err?.code).toBe('bad-signature')
  })
})

describe('decoder under random and mutated input (property-based)', () => {
  const schemas = [
    manifestSchema,
    statusReportSchema,
    adminRequestSchema,
    controlFrameSchema,
    enrollRequestSchema,
  ]
  const valid = [
    encodeMessage(manifestSchema, sampleManifest()),
    encodeMessage(statusReportSchema, sampleStatus()),
    ...sampleControlFrames().map((f) => encodeMessage(controlFrameSchema, f)),
  ]

  function onlyTypedErrors(bytes: Uint8Array): void {
    for (const schema of schemas) {
      try {
        decodeMessage(schema as typeof manifestSchema, bytes, 'fuzz', MAX)
      } catch (err) {
        if (!(err instanceof MessageDecodeError)) throw err
      }
    }
    try {
      openEnvelope(manifestSchema, DOMAINS.manifest, bytes)
    } catch (err) {
      if (!(err instanceof EnvelopeError)) throw err
    }
  }

  it('random bytes only ever produce typed errors', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), onlyTypedErrors), { numRuns: 3000 })
  })

  it('mutated valid messages only ever produce typed errors', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...valid),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.option(fc.nat()),
        (base, flips, cut) => {
          const bytes = Uint8Array.from(base)
          for (const [pos, val] of flips) bytes[pos % bytes.length] = val
          onlyTypedErrors(cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1)))
        },
      ),
      { numRuns: 3000 },
    )
  })

  it('deeply nested input is refused, not a stack overflow', () => {
    const deep = new Uint8Array(100_000).fill(0x81) // arrays of one element, nested
    expect(() => decodeMessage(controlFrameSchema, deep, 'deep', MAX)).toThrow(MessageDecodeError)
  })
})

describe('error accounting', () => {
  it('message and envelope failures are counted as decode errors by framed handlers', async () => {
    const { FrameErrorCounters } = await import('../../protocol/framing.ts')
    const counters = new FrameErrorCounters()
    const errors: unknown[] = []
    for (const bytes of [new Uint8Array([0xff]), new Uint8Array([0xa0])]) {
      try {
        openEnvelope(manifestSchema, DOMAINS.manifest, bytes)
      } catch (err) {
        errors.push(err)
      }
      try {
        decodeMessage(manifestSchema, bytes, 'manifest', MAX)
      } catch (err) {
        errors.push(err)
      }
    }
    for (const err of errors) counters.record(err)
    expect(errors).toHaveLength(4)
    expect(counters.snapshot()).toMatchObject({ decode: 4, other: 0 })
  })
})
