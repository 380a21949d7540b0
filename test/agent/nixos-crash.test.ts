/**
 * kill -9 of an agent (updater-child.ts with the nixos activator) half-way
 * through downloading a NAR for the local Nix: a fresh process's recover()
 * resumes the NAR from the bytes on disk and finishes the update.
 */
import { randomBytes } from 'node:crypto'
import { readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  buildFakeSystem,
  closureOf,
  deleteFromStore,
  nixCacheKey,
  nixUnavailable,
} from '../../testkit/nix/index.ts'
import { parseResult, startChild } from './child-process.ts'
import { makeFleet, removeDir, tempDir, waitFor } from './fixtures.ts'
import { copyToCache } from './nix-fixtures.ts'
import type { ChildConfig, NixosChild } from './updater-child.ts'

const skip = nixUnavailable()
if (skip !== undefined) console.warn(`skipping the nixos crash test with real Nix: ${skip}`)

const fleet = makeFleet()

/**
 * Kills (by pid) what a killed agent left running: a nix-store whose argv names
 * `marker`. Only for speed: the next nix-store waits for the path locks of the
 * orphan, which gives up once its retries against the dead loopback cache run out (~4 s).
 */
async function killLeftovers(marker: string): Promise<void> {
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.startsWith('nix-store\0') && cmdline.includes(marker)) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {
        // gone already
      }
    }
  }
}

describe.skipIf(skip !== undefined)('nixos activator crash recovery (kill -9)', () => {
  let dir: string
  let nixos: NixosChild
  beforeEach(async () => {
    dir = await tempDir('fm-nixos-crash-')
    nixos = {
      root: join(dir, 'agent', 'nix'),
      profile: join(dir, 'profiles', 'system'),
      cacheDir: join(dir, 'cache'),
      switchLog: join(dir, 'switch.log'),
      fetchLog: join(dir, 'fetches.log'),
    }
  })
  afterEach(async () => {
    await killLeftovers(nixos.root)
    await removeDir(dir)
  })

  async function config(action: ChildConfig['action'], extra: Partial<NixosChild>, envelope?: Uint8Array) {
    const path = join(dir, `child-${randomBytes(4).toString('hex')}.json`)
    if (envelope !== undefined) await writeFile(`${path}.envelope`, envelope)
    const cfg: ChildConfig = {
      action,
      stateDir: join(dir, 'state'),
      profileRoot: join(dir, 'unused'),
      fleetRoot: fleet.root.publicKey.toString(),
      fleetId: fleet.fleetId,
      machine: fleet.machine,
      tags: fleet.tags,
      ...(envelope !== undefined ? { envelopePath: `${path}.envelope` } : {}),
      nixos: { ...nixos, ...extra },
    }
    await writeFile(path, JSON.stringify(cfg))
    return path
  }

  it('resumes a NAR download cut by a kill and completes the update', async () => {
    const key = await nixCacheKey(dir, `crash-${randomBytes(4).toString('hex')}`)
    const path = await buildFakeSystem({ tag: `crash-${randomBytes(4).toString('hex')}`, kb: 512 })
    await copyToCache(nixos.cacheDir, path, key.secretFile)
    await deleteFromStore(await closureOf(path))
    const manifest = fleet.manifest({
      payload: { kind: 'nix', storePath: path, substituters: [], trustedPublicKeys: [key.publicKey] },
      activation: 'switch',
      healthCheck: null,
    })

    const stallAt = 100_000
    const first = startChild(await config('offer', { stallAtByte: stallAt }, fleet.sign(manifest)))
    const nars = join(nixos.root, 'nars')
    const part = await waitFor(async () => {
      for (const name of await readdir(nars).catch(() => [] as string[])) {
        if (name.endsWith('.nar.part') && (await stat(join(nars, name))).size === stallAt) return name
      }
      return undefined
    }, 'the first 100 kB of the NAR on disk')
    first.child.kill('SIGKILL')
    await first.exited
    await killLeftovers(nixos.root)

    const recovered = parseResult(await startChild(await config('recover', {})).exited)
    expect(recovered.outcome).toMatchObject({ outcome: 'committed', manifestId: manifest.id })
    const sha256 = part.slice(0, 64)
    const fetches = (await readFile(nixos.fetchLog, 'utf8')).split('\n').filter((l) => l.startsWith(sha256))
    expect(fetches).toEqual([`${sha256} 0`, `${sha256} ${stallAt}`])
    const link = await readlink(nixos.profile)
    expect(await readlink(join(dir, 'profiles', link))).toBe(path)
    expect((await readFile(nixos.switchLog, 'utf8')).trim()).toBe(`${path} switch`)
    expect(await readdir(nars)).toEqual([])
  })
})
