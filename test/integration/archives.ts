/** Builds test archives (real tar.gz files) with an activate hook and a health script. */
import { execFileSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface ArchiveSpec {
  version: string
  /** Exit code of ./health (0 = healthy). */
  healthExit?: number
  /** Shell body of ./activate; default records the version in $FLEETMESH_STATE_MARK. */
  activate?: string
}

export async function makeArchive(dir: string, spec: ArchiveSpec): Promise<string> {
  const src = await mkdtemp(join(tmpdir(), 'fm-arch-'))
  await mkdir(join(src, 'app'), { recursive: true })
  await writeFile(join(src, 'app', 'VERSION'), `${spec.version}\n`)
  await writeFile(
    join(src, 'activate'),
    `#!/bin/sh\nset -e\n${spec.activate ?? `echo "${spec.version}" >> activations.log`}\n`,
  )
  await writeFile(join(src, 'health'), `#!/bin/sh\nexit ${spec.healthExit ?? 0}\n`)
  await chmod(join(src, 'activate'), 0o755)
  await chmod(join(src, 'health'), 0o755)
  const out = join(dir, `app-${spec.version}.tar.gz`)
  try {
    execFileSync('tar', ['-czf', out, '-C', src, '.'])
  } finally {
    await rm(src, { recursive: true, force: true })
  }
  return out
}
