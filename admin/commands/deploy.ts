/**
 * `fleetmesh deploy`: upload an archive, sign a manifest for it and submit it,
 * then watch the rollout until every targeted machine settles.
 */
import { randomBytes } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { machineName, tagName } from '../../keys/index.ts'
import { duration, flag, list, output, parseCommand, str, UsageError } from '../../lib/index.ts'
import {
  buildManifest,
  type HealthCheck,
  type ManifestOptions,
  type SubmitResult,
  sealManifest,
  type Targets,
} from '../../protocol/index.ts'
import { type AdminClient, AdminRequestError } from '../client.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'
import { fileSource, uploadBlob } from '../upload.ts'
import { watchRollout } from './watch.ts'

const DEPLOY_USAGE =
  'fleetmesh deploy <archive.tar.gz> --to <machine|tag:name>[,...] [--generation <name>] [--health-check "<cmd> <args>"] ' +
  '[--health-timeout 30s] [--health-retries N] [--confirm-timeout 2m] [--expires 7d] [--url <http url>] [--no-watch] [--timeout 15m] [--json]'

/** `--to edge-1,tag:lab` → machines and tags, each validated, sorted and deduplicated. */
function parseTargets(items: string[]): Targets {
  const machines: string[] = []
  const tags: string[] = []
  for (const item of items) {
    if (item.startsWith('tag:')) {
      const t = item.slice(4)
      if (!tagName.safeParse(t).success) throw new UsageError(`--to: "${t}" is not a valid tag`)
      tags.push(t)
    } else {
      if (!machineName.safeParse(item).success)
        throw new UsageError(`--to: "${item}" is not a valid machine name (use tag:<name> for tags)`)
      machines.push(item)
    }
  }
  if (machines.length + tags.length === 0)
    throw new UsageError(`--to names no machines or tags\nusage: ${DEPLOY_USAGE}`)
  return { machines: [...new Set(machines)].sort(), tags: [...new Set(tags)].sort() }
}

/** The archive's name without its extension, plus a UTC timestamp: "web-20261123T101500". */
function defaultGeneration(file: string): string {
  const stem = basename(file)
    .replace(/\.(tar\.gz|tgz|tar)$/, '')
    .replace(/[^A-Za-z0-9._+-]/g, '-')
    .slice(0, 80)
  return `${stem}-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}`
}

type ManifestFields = Omit<ManifestOptions, 'fleetId' | 'sequence'>

/**
 * Signs the manifest with the next sequence and submits it. The sequence must exceed
 * every earlier manifest's; if another admin submits between our read and our submit,
 * the coordinator says so and we retry with the same ids.
 */
async function submitNext(client: AdminClient, fields: ManifestFields): Promise<SubmitResult> {
  const fixed = { ...fields, now: Date.now(), id: randomId(), rolloutId: randomId() }
  for (let attempt = 0; ; attempt++) {
    const { maxSequence } = await client.fleetInfo()
    const manifest = buildManifest({
      ...fixed,
      fleetId: client.home.fleet.fleetId,
      sequence: maxSequence + 1,
    })
    try {
      return await client.submitManifest(sealManifest(manifest, client.home.key, client.home.chain))
    } catch (err) {
      if (!(err instanceof AdminRequestError && err.code === 'stale-sequence' && attempt < 3)) throw err
    }
  }
}

const randomId = () => randomBytes(16).toString('hex')

export async function deploy(argv: string[], home: string): Promise<number> {
  const p = parseCommand(
    argv,
    {
      ...REMOTE_OPTIONS,
      to: { type: 'string', multiple: true },
      generation: { type: 'string' },
      'health-check': { type: 'string' },
      'health-timeout': { type: 'string' },
      'health-retries': { type: 'string' },
      'confirm-timeout': { type: 'string' },
      expires: { type: 'string' },
      url: { type: 'string', multiple: true },
      'no-watch': { type: 'boolean' },
      timeout: { type: 'string' },
    },
    DEPLOY_USAGE,
  )
  const file = p.positionals[0]
  if (file === undefined) throw new UsageError(`name the archive to deploy\nusage: ${DEPLOY_USAGE}`)
  const info = await stat(file).catch(() => undefined)
  if (info === undefined || !info.isFile()) throw new UsageError(`${file} is not a readable file`)
  const targets = parseTargets(list(p, 'to'))
  const json = flag(p, 'json')
  const progress = (msg: string) => {
    if (!json) process.stderr.write(`${msg}\n`)
  }
  const generation = str(p, 'generation') ?? defaultGeneration(file)
  const healthArgv = str(p, 'health-check')
    ?.trim()
    .split(/\s+/)
    .filter((s) => s.length > 0)
  const healthCheck: HealthCheck | null =
    healthArgv && healthArgv.length > 0
      ? {
          command: healthArgv,
          timeoutMs: duration(p, 'health-timeout', 30_000),
          retries: Number(str(p, 'health-retries') ?? 2),
          intervalMs: 1000,
        }
      : null
  const urls = list(p, 'url')
  const archive = await fileSource(file)
  progress(`archive ${file}: ${archive.size} bytes, sha256 ${archive.sha256}`)

  return withClient(home, p, async (client) => {
    if ((await uploadBlob(client, archive, progress)) === 'already-stored')
      progress('archive already on the coordinator')
    const result = await submitNext(client, {
      generation,
      targets,
      payload: {
        kind: 'archive',
        sha256: archive.sha256,
        size: archive.size,
        sources: [{ kind: 'coordinator' }, ...urls.map((url) => ({ kind: 'http' as const, url }))],
      },
      healthCheck,
      confirmTimeoutMs: duration(p, 'confirm-timeout', 120_000),
      validForMs: duration(p, 'expires', 7 * 86_400_000),
    })
    progress(
      `rollout ${result.rolloutId}: manifest seq ${result.sequence} for ${result.machines.length} machine(s): ${result.machines.join(', ') || '(none enrolled yet)'}`,
    )
    if (result.unknown.length > 0)
      progress(`not enrolled (will get it once enrolled): ${result.unknown.join(', ')}`)
    if (flag(p, 'no-watch')) {
      output(json, result, () => `submitted rollout ${result.rolloutId}`)
      return 0
    }
    return watchRollout(client, result.rolloutId, result.machines, duration(p, 'timeout', 15 * 60_000), json)
  })
}
