/**
 * `fleetmesh deploy`: put a payload where the machines can fetch it, sign a
 * manifest for it and submit it, then watch the rollout until every targeted
 * machine settles. The payload is an archive uploaded here, or with --nix /
 * --nix-map a NixOS system closure (deploy-nix.ts).
 */
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { flag, inspectTarArchive, list, parseCommand, TarArchiveError, UsageError } from '../../lib/index.ts'
import type { AdminClient } from '../client.ts'
import { withClient } from '../session.ts'
import { fileSource, type UploadSource, uploadBlob } from '../upload.ts'
import { deployNix } from './deploy-nix.ts'
import {
  DEPLOY_COMMAND,
  DEPLOY_USAGE,
  type DeploySettings,
  deploySettings,
  NIX_OPTIONS,
  warnIdleWindows,
} from './deploy-options.ts'
import { parseTargets, resolveTargets, type TargetRequest } from './deploy-targets.ts'
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
  await checkArchiveFile(file)
  const request = parseTargets(list(p, 'to'), flag(p, 'allow-future-machines'), DEPLOY_USAGE)
  const settings = deploySettings(p)
  const archive = await fileSource(file)
  settings.progress(`archive ${file}: ${archive.size} bytes, sha256 ${archive.sha256}`)
  const deployment: ArchiveDeployment = {
    name: basename(file),
    archive,
    request,
    settings,
    urls: list(p, 'url'),
  }

  return withClient(home, p, async (client) => {
    const manifest = await uploadArchive(client, deployment)
    return rollOut(client, randomId(), [manifest], settings)
  })
}

/** An archive deploy once its options are parsed: what `deploy` and the dashboard (ui/api.ts) hand over. */
export interface ArchiveDeployment {
  /** The archive's file name, which the generation name is derived from */
  name: string
  archive: UploadSource
  request: TargetRequest
  settings: DeploySettings
  /** --url: extra http sources */
  urls: string[]
}

/** Refuses a missing file, or an archive the agents would refuse, before anything connects. */
export async function checkArchiveFile(file: string): Promise<void> {
  const info = await stat(file).catch(() => undefined)
  if (info === undefined || !info.isFile()) throw new UsageError(`${file} is not a readable file`)
  await checkArchive(file)
}

/**
 * Resolves the targets (a deploy that reaches no machine fails here, having
 * changed nothing), uploads the archive and returns the manifest to sign for
 * it; rollOut (or submitRollout) signs and submits it.
 */
export async function uploadArchive(client: AdminClient, d: ArchiveDeployment): Promise<ManifestFields> {
  const { settings, archive } = d
  const targets = await beforeSubmit(async () => {
    const resolved = await resolveTargets(client, d.request)
    if (settings.windows.length > 0)
      warnIdleWindows(settings.windows, resolved, await client.machines(), settings.progress)
    if ((await uploadBlob(client, archive, settings.progress)) === 'already-stored')
      settings.progress('archive already on the coordinator')
    return resolved
  })
  return {
    generation: settings.generation ?? generationName(d.name.replace(/\.(tar\.gz|tgz|tar)$/, '')),
    targets,
    payload: {
      kind: 'archive',
      sha256: archive.sha256,
      size: archive.size,
      sources: [{ kind: 'coordinator' }, ...d.urls.map((url) => ({ kind: 'http' as const, url }))],
    },
    healthCheck: settings.healthCheck,
    confirmTimeoutMs: settings.confirmTimeoutMs,
    validForMs: settings.validForMs,
    windows: settings.windows,
  }
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
