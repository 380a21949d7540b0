/** Builds test archives (real tar.gz files) with an activate hook and a health script. */
import { makeArchive as makeTar } from '../test/agent/fixtures.ts'

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
