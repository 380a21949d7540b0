/**
 * The release tarball installed the way an operator installs it: scripts/dist.ts
 * builds it, then it is unpacked and linked as the README says
 * (`tar -xzf … -C /opt`, `ln -sf /opt/fleetmesh-<v>/bin/fleetmesh /usr/bin/fleetmesh`),
 * only under a temporary directory instead of /opt and /usr/bin.
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { runToCompletion } from './fleetmesh.ts'

const DIST_SCRIPT = resolve(import.meta.dirname, '../scripts/dist.ts')

export interface InstalledRelease {
  /** The temporary directory everything lives in */
  dir: string
  /** The built .tar.gz */
  tarball: string
  /** The unpacked `fleetmesh-<version>/` tree (what /opt/fleetmesh-<version> is on a real machine) */
  tree: string
  /** The directory holding the `fleetmesh` symlink (what /usr/bin is on a real machine) */
  binDir: string
  /** What `npm run dist` printed */
  buildOutput: string
}

/** Builds the release tarball into a new temporary directory, unpacks it and links its entry. */
export async function installRelease(): Promise<InstalledRelease> {
  const dir = await mkdtemp(join(tmpdir(), 'fm-release-'))
  const out = join(dir, 'dist')
  const build = await runToCompletion(process.execPath, [DIST_SCRIPT, '--out', out], {
    timeoutMs: 240_000,
    label: 'scripts/dist.ts',
  })
  if (build.code !== 0)
    throw new Error(`scripts/dist.ts exited ${build.code}\n${build.stdout}${build.stderr}`)
  const tarballs = (await readdir(out)).filter((f) => f.endsWith('.tar.gz'))
  if (tarballs.length !== 1) throw new Error(`expected one tarball in ${out}, found: ${tarballs.join(', ')}`)
  const tarball = join(out, tarballs[0] as string)

  const opt = join(dir, 'opt')
  const binDir = join(dir, 'usr-bin')
  await mkdir(opt)
  await mkdir(binDir)
  execFileSync('tar', ['-xzf', tarball, '-C', opt])
  const [name, ...others] = await readdir(opt)
  if (name === undefined || others.length > 0)
    throw new Error(`the tarball should hold one folder, it holds: ${[name, ...others].join(', ')}`)
  execFileSync('ln', ['-sf', join(opt, name, 'bin/fleetmesh'), join(binDir, 'fleetmesh')])
  return { dir, tarball, tree: join(opt, name), binDir, buildOutput: build.stdout }
}
