/**
 * `fleetmesh deploy`: put a payload where the machines can fetch it, sign a
 * manifest for it and submit it, then watch the rollout until every targeted
 * machine settles. The payload is an archive uploaded here, or with --nix /
 * --nix-map a NixOS system closure (deploy-nix.ts).
 */
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { flag, inspectTarArchive, list, parseCommand, TarArchiveError, UsageError } from '../../lib/index.ts'
import { withClient } from '../session.ts'
import { fileSource, uploadBlob } from '../upload.ts'
import { deployNix } from './deploy-nix.ts'
import {
  DEPLOY_COMMAND,
  DEPLOY_USAGE,
  deploySettings,
  NIX_OPTIONS,
  warnIdleWindows,
} from './deploy-options.ts'
import { parseTargets, resolveTargets } from './deploy-targets.ts'
import { beforeSubmit, generationName, type ManifestFields, randomId } from './rollout.ts'
import { rollOut } from './rollout-waves.ts'

export async function deploy(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, DEPLOY_COMMAND)
  if (p.values.nix !== undefined || p.values['nix-map'] !== undefined) return deployNix(p, home)
  for (const name of Object.keys(NIX_OPTIONS))
    if (p.values[name] !== undefined)
      throw new UsageError(`--${name} goes with --nix or --nix-map\nusage: ${DEPLOY_USAGE}`)
  const file = p.positionals[0]
  if (file === undefined) throw new UsageError(`name the archive to deploy\nusage: ${DEPLOY_USAGE}`)
  const info = await stat(file).catch(() => undefined)
  if (info === undefined || !info.isFile()) throw new UsageError(`${file} is not a readable file`)
  await checkArchive(file)
  const request = parseTargets(list(p, 'to'), flag(p, 'allow-future-machines'), DEPLOY_USAGE)
  const settings = deploySettings(p)
  const { progress } = settings
  const generation = settings.generation ?? generationName(basename(file).replace(/\.(tar\.gz|tgz|tar)$/, ''))
  const urls = list(p, 'url')
  const archive = await fileSource(file)
  progress(`archive ${file}: ${archive.size} bytes, sha256 ${archive.sha256}`)

  return withClient(home, p, async (client) => {
    const targets = await beforeSubmit(async () => {
      // Before the upload: a deploy that reaches no machine fails here, having changed nothing.
      const resolved = await resolveTargets(client, request)
      if (settings.windows.length > 0)
        warnIdleWindows(settings.windows, resolved, await client.machines(), progress)
      if ((await uploadBlob(client, archive, progress)) === 'already-stored')
        progress('archive already on the coordinator')
      return resolved
    })
    const rolloutId = randomId()
    const manifest: ManifestFields = {
      generation,
      targets,
      payload: {
        kind: 'archive',
        sha256: archive.sha256,
        size: archive.size,
        sources: [{ kind: 'coordinator' }, ...urls.map((url) => ({ kind: 'http' as const, url }))],
      },
      healthCheck: settings.healthCheck,
      confirmTimeoutMs: settings.confirmTimeoutMs,
      validForMs: settings.validForMs,
      windows: settings.windows,
    }
    return rollOut(client, rolloutId, [manifest], settings)
  })
}

/**
 * Refuses a payload the agents would refuse (`bad-archive`, `unsafe-archive`)
 * before anything is uploaded or signed, with the same inspection they run.
 */
async function checkArchive(file: string): Promise<void> {
  try {
    await inspectTarArchive(file)
  } catch (err) {
    if (!(err instanceof TarArchiveError)) throw err
    throw new UsageError(
      `${err.message}; nothing was uploaded or signed. deploy takes a .tar or .tar.gz of the generation ` +
        '(for a NixOS system use --nix)',
    )
  }
}
