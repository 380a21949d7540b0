import { describe, expect, it } from 'vitest'
import {
  decodeCanonical,
  issueCertificate,
  issueToken,
  MAX_TOKEN_BYTES,
  MAX_TOKEN_OTHERS,
  PrivateKey,
  parseToken,
  TokenError,
  verifyToken,
} from '../../keys/index.ts'
import { fromBase64Url } from '../../lib/index.ts'
import { thrownCode } from '../../testkit/thrown.ts'

const HOUR = 3_600_000
const root = PrivateKey.generate()
const admin = PrivateKey.generate()
const coordinator = {
  peerId: PrivateKey.generate().toPeerId().toString(),
  addrs: ['/ip4/127.0.0.1/tcp/4001'],
}

function chainFor(caps: ('enroll' | 'deploy')[], tags: string[] = ['lab']) {
  return [
    issueCertificate(root, {
      subject: admin.publicKey,
      name: 'ops',
      capabilities: caps,
      scope: { machines: [], tags },
      notAfter: Date.now() + HOUR,
    }),
  ]
}

const codeOf = (fn: () => unknown) => thrownCode(fn, TokenError)

describe('enrollment tokens', () => {
  it('round-trips through the text form and verifies', () => {
    const text = issueToken(admin, chainFor(['enroll']), {
      fleetRoot: root.publicKey,
      coordinator,
      machine: 'edge-1',
      tags: ['lab'],
      ttlMs: HOUR,
    })
    expect(text).toMatch(/^fmtok1\.[A-Za-z0-9_-]+$/)
    expect(text.length).toBeLessThan(2000)
    const token = parseToken(`  ${text}\n`)
    expect(token.machine).toBe('edge-1')
    expect(token.tags).toEqual(['lab'])
    expect(token.coordinator).toEqual(coordinator)
    expect(token.nonce).toMatch(/^[0-9a-f]{32}$/)
    expect(verifyToken(token, { root: root.publicKey }).leaf.name).toBe('ops')
  })

  it("names the fleet's other coordinators, at most MAX_TOKEN_OTHERS, and a token naming one reads as before", () => {
    const other = (port: number) => ({
      peerId: PrivateKey.generate().toPeerId().toString(),
      addrs: [`/ip4/127.0.0.1/tcp/${port}`],
    })
    const opts = { fleetRoot: root.publicKey, coordinator, machine: 'edge-1', tags: ['lab'], ttlMs: HOUR }
    const others = Array.from({ length: MAX_TOKEN_OTHERS + 2 }, (_, i) => other(5000 + i))
    // the token's own coordinator is not named twice; the rest in order, up to the bound
    const many = parseToken(
      issueToken(admin, chainFor(['enroll']), { ...opts, others: [coordinator, ...others] }),
    )
    expect(many.others).toEqual(others.slice(0, MAX_TOKEN_OTHERS))
    expect(verifyToken(many, { root: root.publicKey }).leaf.name).toBe('ops')
    // with no other coordinator the body has no `others` at all: agents before it read the token
    const one = issueToken(admin, chainFor(['enroll']), { ...opts, others: [coordinator] })
    expect(parseToken(one).others).toEqual([])
    const wire = decodeCanonical(fromBase64Url(one.slice('fmtok1.'.length)), MAX_TOKEN_BYTES) as {
      body: Uint8Array
    }
    expect(Object.keys(decodeCanonical(wire.body, MAX_TOKEN_BYTES) as object)).not.toContain('others')
  })

  it('refuses to issue a token larger than an agent reads, saying why', () => {
    const long = (i: number) => ({
      peerId: PrivateKey.generate().toPeerId().toString(),
      addrs: Array.from({ length: 16 }, (_, j) => `/dns4/${'x'.repeat(480)}${i}-${j}.example/tcp/4001`),
    })
    const opts = { fleetRoot: root.publicKey, coordinator, machine: 'edge-1', tags: ['lab'], ttlMs: HOUR }
    const others = Array.from({ length: MAX_TOKEN_OTHERS }, (_, i) => long(i))
    expect(() => issueToken(admin, chainFor(['enroll']), { ...opts, others })).toThrow(
      /more than the 32768 an agent reads/,
    )
  })

  it('each token gets a fresh nonce', () => {
    const opts = { fleetRoot: root.publicKey, coordinator, machine: 'edge-1', tags: ['lab'], ttlMs: HOUR }
    expect(parseToken(issueToken(admin, chainFor(['enroll']), opts)).nonce).not.toBe(
      parseToken(issueToken(admin, chainFor(['enroll']), opts)).nonce,
    )
  })

  it('rejects expired, wrong-root, unauthorised and out-of-scope tokens', () => {
    const base = { fleetRoot: root.publicKey, coordinator, machine: 'edge-1', tags: ['lab'], ttlMs: HOUR }
    const expired = parseToken(
      issueToken(admin, chainFor(['enroll']), { ...base, now: Date.now() - 2 * HOUR }),
    )
    expect(codeOf(() => verifyToken(expired, { root: root.publicKey }))).toBe('expired')
    const ok = parseToken(issueToken(admin, chainFor(['enroll']), base))
    expect(codeOf(() => verifyToken(ok, { root: PrivateKey.generate().publicKey }))).toBe('wrong-root')
    const noEnroll = parseToken(issueToken(admin, chainFor(['deploy']), base))
    expect(codeOf(() => verifyToken(noEnroll, { root: root.publicKey }))).toBe('unauthorised')
    const otherTag = parseToken(issueToken(admin, chainFor(['enroll']), { ...base, tags: ['prod'] }))
    expect(codeOf(() => verifyToken(otherTag, { root: root.publicKey }))).toBe('unauthorised')
  })

  it('any altered character is detected', () => {
    const text = issueToken(admin, chainFor(['enroll']), {
      fleetRoot: root.publicKey,
      coordinator,
      machine: 'edge-1',
      tags: ['lab'],
      ttlMs: HOUR,
    })
    let detected = 0
    for (let i = 'fmtok1.'.length; i < text.length; i += 7) {
      const c = text[i] === 'A' ? 'B' : 'A'
      const altered = text.slice(0, i) + c + text.slice(i + 1)
      const got = codeOf(() => verifyToken(parseToken(altered), { root: root.publicKey }))
      expect(got).toBeDefined()
      detected++
    }
    expect(detected).toBeGreaterThan(10)
    expect(codeOf(() => parseToken('hello'))).toBe('malformed')
    expect(codeOf(() => parseToken(text.slice(0, 40)))).toBe('malformed')
  })
})

describe('enrollment scope', () => {
  it('an admin scoped to a tag cannot enroll a machine into a tag outside it', () => {
    const text = issueToken(admin, chainFor(['enroll'], ['lab']), {
      fleetRoot: root.publicKey,
      coordinator,
      machine: 'edge-2',
      tags: ['lab', 'prod'],
      ttlMs: HOUR,
    })
    expect(codeOf(() => verifyToken(parseToken(text), { root: root.publicKey }))).toBe('unauthorised')
  })
})
