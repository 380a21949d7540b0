import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { loadNixSigningKey, NixPublicKey, NixSigningKey, saveNixSigningKey } from '../../keys/index.ts'
import { fromNixBase32, toNixBase32 } from '../../lib/index.ts'
import {
  checkNarInfoSignature,
  formatNarInfo,
  type NarInfo,
  nixSha256,
  parseNarInfo,
  sha256HexOfNixHash,
  signNarInfo,
  storePathHash,
} from '../../protocol/index.ts'

const hasNix = (() => {
  try {
    execFileSync('nix-hash', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()
if (!hasNix)
  console.warn(
    'narinfo: cross-checks against real Nix skipped: nix-hash is not installed (apt-get install nix-bin)',
  )

const PATH_A = '/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-system-a'
const REF_B = 'b9r4p5prkj7lzfd1877wk11c9c730mdq-dep-b'

function sample(overrides: Partial<NarInfo> = {}): NarInfo {
  const narHex = createHash('sha256').update('nar').digest('hex')
  return {
    storePath: PATH_A,
    url: `nar/${narHex}.nar`,
    compression: 'none',
    fileHash: nixSha256(narHex),
    fileSize: 1234,
    narHash: nixSha256(narHex),
    narSize: 1234,
    references: [REF_B, PATH_A.slice(11)],
    deriver: null,
    ca: null,
    sigs: [],
    ...overrides,
  }
}

describe('Nix base32', () => {
  it('round-trips any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (bytes) => {
        expect(fromNixBase32(toNixBase32(bytes), bytes.byteLength)).toEqual(bytes)
      }),
    )
  })

  it('rejects characters outside the alphabet and wrong lengths', () => {
    expect(() => fromNixBase32('e'.repeat(52), 32)).toThrow(/not a Nix base32 character/)
    expect(() => fromNixBase32('0'.repeat(51), 32)).toThrow(/expected 52/)
  })

  it.skipIf(!hasNix)('matches nix-hash --to-base32 on random hashes', () => {
    for (let i = 0; i < 5; i++) {
      const hex = randomBytes(32).toString('hex')
      const nix = execFileSync('nix-hash', ['--type', 'sha256', '--to-base32', hex], {
        encoding: 'utf8',
      }).trim()
      expect(nixSha256(hex)).toBe(`sha256:${nix}`)
      expect(sha256HexOfNixHash(`sha256:${nix}`)).toBe(hex)
    }
  })
})

describe('narinfo', () => {
  it('formats and parses back to the same record', () => {
    const info = sample({ deriver: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv', sigs: ['k:c2ln'] })
    expect(parseNarInfo(formatNarInfo(info))).toEqual(info)
  })

  it('names the field that is wrong', () => {
    const good = formatNarInfo(sample())
    expect(() => parseNarInfo(good.replace(/^NarHash: .*$/m, 'NarHash: md5:abc'))).toThrow(/SHA-256/)
    expect(() => parseNarInfo(good.replace(/^NarSize: .*$/m, 'NarSize: -1'))).toThrow(/NarSize "-1"/)
    expect(() => parseNarInfo(good.replace(/^StorePath: .*$/m, 'StorePath: /etc/passwd'))).toThrow(
      /StorePath/,
    )
    expect(() => parseNarInfo(good.replace(/^URL: .*$/m, 'URL: ../../etc/passwd'))).toThrow(/URL/)
    expect(() => parseNarInfo(good.replace(/^References: .*$/m, 'References: not/a/path'))).toThrow(
      /References/,
    )
    expect(() => parseNarInfo(good.replace(/^NarSize: .*\n/m, ''))).toThrow(/no NarSize/)
    expect(() => parseNarInfo(`${good}NarSize: 1\n`)).toThrow(/repeats the NarSize/)
    expect(() => parseNarInfo('x'.repeat(70_000))).toThrow(/at most/)
  })

  it('accepts SRI and hex hashes and names store path hashes', () => {
    const hex = createHash('sha256').update('x').digest('hex')
    expect(sha256HexOfNixHash(`sha256-${Buffer.from(hex, 'hex').toString('base64')}`)).toBe(hex)
    expect(sha256HexOfNixHash(`sha256:${hex}`)).toBe(hex)
    expect(storePathHash(PATH_A)).toBe('0mdqa9w1p6cmli6976v4wi0sw9r4p5pr')
    expect(() => storePathHash('/nix/store/short-x')).toThrow(/not a \/nix\/store/)
  })

  it('verifies a signature by a trusted key and refuses unsigned, untrusted and tampered ones', () => {
    const key = NixSigningKey.generate('fleet-cache-1')
    const other = NixSigningKey.generate('someone-else')
    const signed = signNarInfo(sample(), key)
    expect(checkNarInfoSignature(signed, [key.publicKey])).toMatchObject({ ok: true })
    expect(checkNarInfoSignature(sample(), [key.publicKey])).toMatchObject({
      ok: false,
      reason: /not signed/,
    })
    expect(checkNarInfoSignature(signNarInfo(sample(), other), [key.publicKey])).toMatchObject({
      ok: false,
      reason: /signed only by \[someone-else\]/,
    })
    const tampered = { ...signed, narSize: signed.narSize + 1 }
    expect(checkNarInfoSignature(tampered, [key.publicKey])).toMatchObject({
      ok: false,
      reason: /does not match/,
    })
    // A key with the trusted name but other bytes is not the trusted key.
    const impostor = NixPublicKey.fromBytes('fleet-cache-1', other.publicKey.bytes)
    expect(checkNarInfoSignature(signed, [impostor])).toMatchObject({ ok: false })
  })
})

describe('Nix keys', () => {
  it('parses public keys and says what is wrong with bad ones', () => {
    const key = NixSigningKey.generate('c1')
    expect(NixPublicKey.parse(key.publicKey.toString()).equals(key.publicKey)).toBe(true)
    expect(() => NixPublicKey.parse('no-colon', '--trusted-key')).toThrow(/--trusted-key must look like/)
    expect(() => NixPublicKey.parse('c1:AAAA')).toThrow(/32 base64-encoded bytes, got 3/)
    expect(() => JSON.stringify(key)).toThrow(/refusing/)
    expect(String(key)).not.toContain(key.exportSecretText().split(':')[1])
  })

  it('saves the secret key 0600 and refuses a corrupt one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleetmesh-nixkey-'))
    try {
      const key = NixSigningKey.generate('c2')
      await saveNixSigningKey(join(dir, 'k.sec'), key)
      expect((await stat(join(dir, 'k.sec'))).mode & 0o777).toBe(0o600)
      expect((await loadNixSigningKey(join(dir, 'k.sec'))).publicKey.equals(key.publicKey)).toBe(true)
      const raw = Buffer.from(key.exportSecretText().split(':')[1] as string, 'base64')
      raw.set(NixSigningKey.generate('c2').publicKey.bytes, 32)
      expect(() => NixSigningKey.parse(`c2:${raw.toString('base64')}`)).toThrow(/does not match its seed/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it.skipIf(!hasNix)('reads keys made by nix-store --generate-binary-cache-key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleetmesh-nixkey-'))
    try {
      execFileSync(
        'nix-store',
        ['--generate-binary-cache-key', 'made-by-nix', join(dir, 'sec'), join(dir, 'pub')],
        {
          stdio: 'ignore',
        },
      )
      const secret = NixSigningKey.parse(await readFile(join(dir, 'sec'), 'utf8'))
      const pub = NixPublicKey.parse((await readFile(join(dir, 'pub'), 'utf8')).trim())
      expect(secret.publicKey.equals(pub)).toBe(true)
      expect(secret.name).toBe('made-by-nix')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
