/** Builds test archives: real tar(.gz) files made with the system tar, and app archives with an activate hook and a health script. */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { sha256Hex } from '../lib/index.ts'

export type FileSpec = string | { content: string; mode: number }

export const sh = (body: string): FileSpec => ({ content: `#!/bin/sh\n${body}\n`, mode: 0o755 })

export interface Archive {
  path: string
  bytes: Uint8Array
  sha256: string
  size: number
}

/** Builds a real archive with the system tar, members named ./<file>. */
export async function makeTar(
  dir: string,
  files: Record<string, FileSpec>,
  options: { gzip?: boolean; extraArgs?: string[] } = {},
): Promise<Archive> {
  const staging = await mkdtemp(join(dir, 'staging-'))
  for (const [name, spec] of Object.entries(files)) {
    const path = join(staging, name)
    await mkdir(dirname(path), { recursive: true })
    const { content, mode } = typeof spec === 'string' ? { content: spec, mode: 0o644 } : spec
    await writeFile(path, content)
    await chmod(path, mode)
  }
  const gzip = options.gzip ?? true
  const path = join(dir, `archive-${randomBytes(4).toString('hex')}.tar${gzip ? '.gz' : ''}`)
  execFileSync('tar', [gzip ? '-czf' : '-cf', path, '-C', staging, ...(options.extraArgs ?? ['.'])])
  await rm(staging, { recursive: true, force: true })
  const bytes = new Uint8Array(await readFile(path))
  return { path, bytes, sha256: sha256Hex(bytes), size: bytes.byteLength }
}

export interface ArchiveSpec {
  version: string
  /** Exit code of ./health (0 = healthy). */
  healthExit?: number
  /** Shell body of ./activate; default appends the version to activations.log in the generation. */
  activate?: string
}

export async function makeArchive(dir: string, spec: ArchiveSpec): Promise<string> {
  const archive = await makeTar(dir, {
    'app/VERSION': `${spec.version}\n`,
    activate: {
      content: `#!/bin/sh\nset -e\n${spec.activate ?? `echo "${spec.version}" >> activations.log`}\n`,
      mode: 0o755,
    },
    health: { content: `#!/bin/sh\nexit ${spec.healthExit ?? 0}\n`, mode: 0o755 },
  })
  return archive.path
}
