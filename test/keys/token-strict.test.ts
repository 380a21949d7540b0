// One text, one token: the base64url decoder used to ignore the unused low
// bits of the last character, so a token whose last character was changed
// still decoded to the same bytes and verified. Every change to a token's
// text must now be refused, or decode to another token that fails its checks.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { type EnrollmentToken, issueToken, parseToken, TokenError, verifyToken } from '../../keys/index.ts'
import { bytesEqual, fromBase64Url, toBase64Url } from '../../lib/index.ts'
import { certifiedAdmin } from '../../testkit/fixtures.ts'

const HOUR = 3_600_000
const PREFIX = 'fmtok1.'
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const { root, admin, chain } = certifiedAdmin({ capabilities: ['enroll'], scope: { all: true } })

/** A token whose last character carries unused bits (the case the old decoder got wrong). */
function tokenWithUnusedBits(): string {
  for (let n = 1; n < 10; n++) {
    const text = issueToken(admin, chain, {
      fleetRoot: root.publicKey,
      coordinator: { peerId: root.toPeerId().toString(), addrs: ['/ip4/127.0.0.1/tcp/4001'] },
      machine: `edge-${'1'.repeat(n)}`,
      tags: ['lab'],
      ttlMs: HOUR,
    })
    if ((text.length - PREFIX.length) % 4 !== 0) return text
  }
  throw new Error('no token length with unused bits found')
}

const token = tokenWithUnusedBits()
const wire = fromBase64Url(token.slice(PREFIX.length))

/** A mutated text is refused, or decodes to other bytes and then fails verification. */
function expectRefusedOrInvalid(mutated: string): void {
  let parsed: EnrollmentToken
  try {
    parsed = parseToken(mutated)
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError)
    return
  }
  expect(bytesEqual(fromBase64Url(parsed.text.slice(PREFIX.length)), wire)).toBe(false)
  expect(() => verifyToken(parsed, { root: root.publicKey })).toThrow(TokenError)
}

describe('strict base64url', () => {
  it('decodes only the canonical text of each byte string', () => {
    expect(fromBase64Url('AQ')).toEqual(new Uint8Array([1]))
    // the same byte with unused bits set: Buffer.from accepts it
    for (const alias of ['AR', 'AS', 'AT', 'Af']) expect(() => fromBase64Url(alias)).toThrow(TypeError)
    expect(() => fromBase64Url('AQ==')).toThrow(TypeError)
    expect(() => fromBase64Url('AQI=')).toThrow(TypeError)
    expect(() => fromBase64Url('AQIDB')).toThrow(TypeError) // length mod 4 == 1
    expect(fromBase64Url('')).toEqual(new Uint8Array())
  })

  it('round-trips any bytes, and any text it accepts is the encoding of what it returns', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        expect(fromBase64Url(toBase64Url(bytes))).toEqual(bytes)
      }),
    )
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...ALPHABET), maxLength: 12 }), (text) => {
        let bytes: Uint8Array
        try {
          bytes = fromBase64Url(text)
        } catch {
          return
        }
        expect(toBase64Url(bytes)).toBe(text)
      }),
      { numRuns: 2000 },
    )
  })
})

describe('enrollment token text', () => {
  it('refuses every other last character', () => {
    expect(verifyToken(parseToken(token), { root: root.publicKey }).leaf.name).toBe('ops')
    const last = token.at(-1) as string
    for (const c of ALPHABET) {
      if (c === last) continue
      expect(() => parseToken(token.slice(0, -1) + c), `last character ${c}`).toThrow(TokenError)
    }
  })

  it('every one-character change is refused or decodes to a token that fails verification', () => {
    const chars = fc.constantFrom(...ALPHABET, '=', '.', '+', '/', ' ', '\n', 'é')
    // the end of the text half the time: that is where unused bits hide
    const position = fc.oneof(
      fc.nat({ max: token.length - 1 }),
      fc.integer({ min: token.length - 3, max: token.length - 1 }),
    )
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('replace' as const), at: position, c: chars }),
      fc.record({ kind: fc.constant('insert' as const), at: position, c: chars }),
      fc.record({ kind: fc.constant('delete' as const), at: position, c: fc.constant('') }),
    )
    fc.assert(
      fc.property(mutation, ({ kind, at, c }) => {
        const mutated =
          token.slice(0, at) + (kind === 'delete' ? '' : c) + token.slice(kind === 'insert' ? at : at + 1)
        // whitespace around a pasted token is trimmed: that is the same token, not a change
        fc.pre(mutated.trim() !== token)
        expectRefusedOrInvalid(mutated)
      }),
      { numRuns: 500 },
    )
  })
})
