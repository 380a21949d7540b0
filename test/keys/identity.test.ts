import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  KeyFileError,
  loadIdentity,
  loadOrCreateIdentity,
  PrivateKey,
  PublicKey,
  saveIdentity,
} from '../../keys/index.ts'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fm-keys-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('identity files', () => {
  it('saves with mode 0600 and loads the same key', async () => {
    const key = PrivateKey.generate()
    const path = join(dir, 'sub', 'identity.key')
    await saveIdentity(path, key)
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    const loaded = await loadIdentity(path)
    expect(loaded.publicKey.equals(key.publicKey)).toBe(true)
  })

  it('refuses a key file readable by others and says how to fix it', async () => {
    const path = join(dir, 'identity.key')
    await saveIdentity(path, PrivateKey.generate())
    await chmod(path, 0o644)
    const err = await loadIdentity(path).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KeyFileError)
    expect((err as Error).message).toContain('chmod 600')
    expect((err as Error).message).toContain('644')
  })

  it('rejects a file whose public key does not match its seed, and non-key files', async () => {
    const path = join(dir, 'identity.key')
    await saveIdentity(path, PrivateKey.generate())
    const parsed = JSON.parse(await readFile(path, 'utf8'))
    parsed.publicKey = PrivateKey.generate().publicKey.toString()
    await writeFile(path, JSON.stringify(parsed), { mode: 0o600 })
    await expect(loadIdentity(path)).rejects.toThrow(/does not match its seed/)
    await writeFile(path, '{"hello":1}', { mode: 0o600 })
    await expect(loadIdentity(path)).rejects.toThrow(/not a fleetmesh private key/)
    await writeFile(path, 'garbage', { mode: 0o600 })
    await expect(loadIdentity(path)).rejects.toThrow(KeyFileError)
  })

  it('loadOrCreateIdentity creates once and then returns the same key', async () => {
    const path = join(dir, 'identity.key')
    const a = await loadOrCreateIdentity(path)
    const b = await loadOrCreateIdentity(path)
    expect(a.publicKey.equals(b.publicKey)).toBe(true)
  })
})

describe('key types', () => {
  it('the identity is the libp2p PeerId', () => {
    const key = PrivateKey.generate()
    const peerId = key.toPeerId()
    expect(peerId.type).toBe('Ed25519')
    expect(PublicKey.fromPeerId(peerId).equals(key.publicKey)).toBe(true)
    expect(key.toLibp2p().publicKey.raw).toEqual(key.publicKey.bytes)
  })

  it('a private key never appears in JSON or inspect output', () => {
    const key = PrivateKey.generate()
    const seedText = Buffer.from(key.exportSeed()).toString('base64url')
    expect(() => JSON.stringify({ key })).toThrow(/refusing to serialise/)
    expect(inspect({ key })).not.toContain(seedText)
    expect(String(key)).toContain('redacted')
  })

  it('public keys round-trip through text and reject wrong lengths', () => {
    const pub = PrivateKey.generate().publicKey
    expect(PublicKey.parse(pub.toString()).equals(pub)).toBe(true)
    expect(() => PublicKey.fromBytes(new Uint8Array(31))).toThrow(/32 bytes/)
    expect(() => PublicKey.parse('not base64 !!')).toThrow(/not a base64url/)
  })
})
