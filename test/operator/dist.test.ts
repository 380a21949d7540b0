/**
 * `npm run dist`: the release tarball is self-contained. Unpacked and linked as
 * the README says, its `fleetmesh` runs on the Node 24 inside it even where no
 * Node is on PATH at all, and it carries the runtime code but no tests, no dev
 * dependencies and no TypeScript entry points under node_modules.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rm, symlink } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FLEETMESH_VERSION, sha256File } from '../../lib/index.ts'
import { loadedTargets, runtimeFolders } from '../../scripts/dist.ts'
import { runToCompletion } from '../../testkit/fleetmesh.ts'
import { type InstalledRelease, installRelease } from '../../testkit/release.ts'

const ROOT = join(import.meta.dirname, '../..')

describe('the release tarball', () => {
  let release: InstalledRelease
  beforeAll(async () => {
    release = await installRelease()
  }, 300_000)
  afterAll(async () => {
    if (release !== undefined) await rm(release.dir, { recursive: true, force: true })
  })

  it('is named for the version and platform, with its sha256 beside it', async () => {
    expect(basename(release.tarball)).toBe(`fleetmesh-${FLEETMESH_VERSION}-linux-${process.arch}.tar.gz`)
    expect(basename(release.tree)).toBe(`fleetmesh-${FLEETMESH_VERSION}`)
    const sum = await readFile(`${release.tarball}.sha256`, 'utf8')
    expect(sum).toBe(`${await sha256File(release.tarball)}  ${basename(release.tarball)}\n`)
    expect(release.buildOutput).toContain(`sha256 ${await sha256File(release.tarball)}`)
  })

  it('holds the runtime code, production packages and the pinned Node, and nothing for development', () => {
    const has = (path: string) => existsSync(join(release.tree, path))
    for (const path of [
      'bin/fleetmesh',
      'bin/main.ts',
      'runtime/node',
      'package.json',
      'README',
      'agent/cli.ts',
      'packaging/systemd/fleetmesh-agent.service',
      'node_modules/libp2p/package.json',
      'node_modules/zod/package.json',
    ])
      expect(has(path), path).toBe(true)
    for (const path of [
      'test',
      'testkit',
      'bench',
      'scripts',
      'docs',
      'node_modules/vitest',
      'node_modules/typescript',
      'node_modules/node',
      'node_modules/.bin',
    ])
      expect(has(path), path).toBe(false)
  })

  it('gives every entry one owner and one mtime, so equal trees give equal tarballs', () => {
    const listing = execFileSync('tar', ['-tzvf', release.tarball, '--numeric-owner'], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    })
      .trim()
      .split('\n')
    const owners = new Set(listing.map((line) => line.split(/\s+/)[1]))
    const times = new Set(listing.map((line) => line.split(/\s+/).slice(3, 5).join(' ')))
    expect([...owners]).toEqual(['0/0'])
    expect(times.size).toBe(1)
  })

  it('runs on its own Node 24 with no Node on PATH', async () => {
    // PATH holds the installed link and the two tools the entry uses: no node, no npm.
    const path = join(release.dir, 'bare-path')
    await mkdir(path)
    await symlink('/bin/sh', join(path, 'sh'))
    await symlink(
      execFileSync('sh', ['-c', 'command -v readlink'], { encoding: 'utf8' }).trim(),
      join(path, 'readlink'),
    )
    await symlink(join(release.binDir, 'fleetmesh'), join(path, 'fleetmesh'))
    const env = { PATH: path, HOME: release.dir }
    const sh = (script: string) => runToCompletion('/bin/sh', ['-c', script], { env, timeoutMs: 60_000 })

    const noNode = await sh('command -v node || echo "no node"')
    expect(noNode.stdout.trim()).toBe('no node')
    const version = await sh('fleetmesh --version')
    expect(version.code, version.stderr).toBe(0)
    expect(version.stdout.trim()).toBe(`fleetmesh ${FLEETMESH_VERSION} (node ${process.versions.node})`)
    expect(process.versions.node).toMatch(/^24\./)
    const help = await sh('fleetmesh agent --help')
    expect(help.code, help.stderr).toBe(0)
    expect(help.stdout).toContain('usage: fleetmesh agent --state <dir>')
  })
})

describe('what the dist script ships', () => {
  it('the source folders bin/fleetmesh.js loads, and no test code', () => {
    const folders = runtimeFolders(ROOT)
    expect(folders).toEqual(expect.arrayContaining(['admin', 'agent', 'bin', 'coordinator', 'lib', 'net']))
    for (const dev of ['test', 'testkit', 'bench', 'scripts', 'docs']) expect(folders).not.toContain(dev)
  })

  it('counts a TypeScript entry point only under conditions plain Node matches', () => {
    // zod's own layout: a custom condition pointing at .ts, which Node never picks by itself
    const zodLike = { '.': { '@zod/source': './src/index.ts', import: './index.js', require: './index.cjs' } }
    expect(loadedTargets(zodLike)).toEqual(['./index.js', './index.cjs'])
    expect(loadedTargets({ '.': { types: './x.d.ts', node: './x.ts' } })).toEqual(['./x.ts'])
    expect(loadedTargets({ default: './a.js', node: './late.ts' })).toEqual(['./a.js'])
    expect(loadedTargets(['./main.ts'])).toEqual(['./main.ts'])
  })
})
