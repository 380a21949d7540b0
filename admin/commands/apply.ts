/**
 * `fleetmesh apply <fleet.json>`: carry out what `plan` shows. Everything that
 * can fail is checked before anything changes: the file, the payloads, what
 * the coordinator knows, and this admin's certificate for every machine and
 * tag it touches. Then the archives are uploaded (content-addressed: an
 * upload alone changes no machine), the enrollment tokens written, and one
 * rollout submitted per channel. docs/fleet-file.md says what is atomic.
 */
import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { issueToken, verifyChain } from '../../keys/index.ts'
import {
  type CommandSpec,
  duration,
  inspectTarArchive,
  output,
  type Parsed,
  parseCommand,
  str,
  TarArchiveError,
  UsageError,
  writeFileAtomic,
} from '../../lib/index.ts'
import type { WavePolicy } from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { channelPolicy, channelSettings } from '../fleet-channel.ts'
import { DEFAULT_FLEET_FILE, type LoadedFleet, loadFleet } from '../fleet-command.ts'
import type { ChannelEntry, FleetFile } from '../fleet-file.ts'
import { type FleetPlan, formatPlan, type MachinePlan, planFleet } from '../fleet-plan.ts'
import type { AdminHome } from '../home.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'
import { fileSource, type UploadSource, uploadBlob } from '../upload.ts'
import { DEPLOY_OPTIONS, deploySettings } from './deploy-options.ts'
import { beforeSubmit, type ManifestFields, randomId } from './rollout.ts'
import { rollOut } from './rollout-waves.ts'

const USAGE =
  'fleetmesh apply [<fleet.json>] [--tokens <dir>] [--ttl 24h] [--no-watch] [--timeout 15m] [--json]'

export const APPLY_COMMAND: CommandSpec = {
  name: 'apply',
  summary: 'Carry out a fleet file: enrollment tokens for new machines, then one rollout per channel.',
  usage: USAGE,
  options: {
    ...REMOTE_OPTIONS,
    tokens: {
      type: 'string',
      value: '<dir>',
      description: "directory for the new machines' enrollment tokens, one <machine>.token each (mode 0600)",
    },
    ttl: {
      type: 'string',
      value: '<duration>',
      description: "how long the new machines' tokens stay usable, from 1m to 30d",
      default: '24h',
    },
    'no-watch': DEPLOY_OPTIONS['no-watch'],
    timeout: DEPLOY_OPTIONS.timeout,
  },
  notes: [
    `The file defaults to ${DEFAULT_FLEET_FILE}. Tokens are written to --tokens, never printed.`,
    "A new machine gets its channel's generation as soon as it enrolls with its token.",
    'A channel with a "rollout" goes out in waves, as deploy --waves with the same options.',
    "Refused, with nothing changed: tag changes on enrolled machines (not supported yet), anything outside this admin's certificate.",
    "--json prints JSON lines: the rollouts' watch events, then a summary {plan, tokens, rollouts}.",
    "exit codes: those of deploy (watching each channel's rollout in turn); 0 when there was nothing to do.",
  ],
  examples: ['fleetmesh apply fleet.json --tokens ./tokens', 'fleetmesh plan fleet.json && echo up to date'],
}

const MINUTE = 60_000
const HOUR = 3_600_000

/** What apply does for one channel: its payload, and the machines that get it. */
interface ChannelWork {
  name: string
  entry: ChannelEntry
  machines: string[]
  archive: UploadSource
  fields: Omit<ManifestFields, 'payload'>
  /** The channel's rollout policy; undefined: every machine at once */
  waves: WavePolicy | undefined
}

/** The payload of a channel that deploys now: only archives so far. */
async function channelArchive(file: FleetFile, name: string, entry: ChannelEntry): Promise<UploadSource> {
  if (entry.archive === undefined)
    throw new UsageError(
      `${file.where(['channels', name, 'nixMap'])}: channels.${name}.nixMap: apply does not deploy NixOS closure maps yet; ` +
        `run "fleetmesh deploy --nix-map ${entry.nixMap}" for this channel, then plan again`,
    )
  const path = resolve(file.dir, entry.archive)
  try {
    await inspectTarArchive(path)
  } catch (err) {
    const why = err instanceof TarArchiveError ? err.message : `cannot be read (${(err as Error).message})`
    throw new UsageError(
      `${file.where(['channels', name, 'archive'])}: channels.${name}.archive: ${path}: ${why}; nothing was changed`,
    )
  }
  return fileSource(path)
}

/** Certificate refusals for what the plan touches: all of them, before anything is written or sent. */
function scopeRefusals(home: AdminHome, plan: FleetPlan): string[] {
  const refusals: string[] = []
  const check = (what: string, options: Parameters<typeof verifyChain>[1]) => {
    try {
      verifyChain(home.chain, options)
    } catch (err) {
      refusals.push(`${what}: ${(err as Error).message}`)
    }
  }
  const base = { root: home.fleetRoot, signer: home.key.publicKey }
  for (const m of plan.machines) {
    if (m.action === 'enroll')
      check(`enroll ${m.machine}`, {
        ...base,
        capability: 'enroll',
        target: { kind: 'new-machine', name: m.machine, tags: m.tagsAdded },
      })
    if (m.deploy || (m.action === 'enroll' && m.desired !== null))
      check(`deploy ${m.desired} to ${m.machine}`, {
        ...base,
        capability: 'deploy',
        target: { kind: 'machine', name: m.machine, tags: m.tags },
      })
  }
  return refusals
}

/** What apply cannot do yet, said before anything changes. */
function unsupported(plan: FleetPlan): string[] {
  return plan.machines
    .filter((m) => m.enrolled && m.tagsAdded.length + m.tagsRemoved.length > 0)
    .map(
      (m) =>
        `${m.machine}: tags ${[...m.tagsAdded.map((t) => `+${t}`), ...m.tagsRemoved.map((t) => `-${t}`)].join(' ')}: ` +
        "apply cannot change an enrolled machine's tags yet (they are signed into its enrollment); " +
        'put its current tags back in the file, or re-enroll it with the new ones',
    )
}

async function prepare(
  client: AdminClient,
  fleet: LoadedFleet,
  p: Parsed,
): Promise<{ plan: FleetPlan; work: ChannelWork[]; tokenDir: string | undefined }> {
  const { file } = fleet
  const plan = planFleet(file, fleet.machines, await beforeSubmit(() => client.machines()))
  const problems = [...unsupported(plan), ...scopeRefusals(client.home, plan)]
  const tokenDir = str(p, 'tokens')
  if (plan.machines.some((m) => m.action === 'enroll') && tokenDir === undefined)
    problems.push(
      `new machines (${plan.machines
        .filter((m) => m.action === 'enroll')
        .map((m) => m.machine)
        .join(', ')}) need enrollment tokens: name a directory for them with --tokens <dir>`,
    )
  if (problems.length > 0)
    throw new UsageError(`apply refused, nothing was changed:\n  ${problems.join('\n  ')}`)
  const work: ChannelWork[] = []
  for (const [name, entry] of Object.entries(file.channels)) {
    // new machines are named too: the coordinator holds the manifest until they enroll
    const machines = plan.machines
      .filter((m) => m.channel === name && (m.deploy || (m.action === 'enroll' && m.desired !== null)))
      .map((m) => m.machine)
    if (machines.length === 0) continue
    const settings = channelSettings(file, name, entry)
    const waves = channelPolicy(file, name, entry)
    work.push({
      waves,
      name,
      entry,
      machines,
      archive: await channelArchive(file, name, entry),
      fields: {
        generation: entry.generation,
        targets: { machines, tags: [] },
        healthCheck: settings.healthCheck,
        confirmTimeoutMs: settings.confirmTimeoutMs,
        validForMs: settings.validForMs,
      },
    })
  }
  return { plan, work, tokenDir }
}

/** Tokens for the plan's new machines, in `dir` (created 0700); their paths, by machine. */
async function writeTokens(home: AdminHome, plan: MachinePlan[], dir: string, ttlMs: number) {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const written: Record<string, string> = {}
  for (const m of plan) {
    const token = issueToken(home.key, home.chain, {
      fleetRoot: home.fleetRoot,
      coordinator: home.fleet.coordinator,
      machine: m.machine,
      tags: m.tagsAdded,
      ttlMs,
    })
    const path = join(dir, `${m.machine}.token`)
    await writeFileAtomic(path, `${token}\n`, 0o600)
    written[m.machine] = path
  }
  return written
}

export async function apply(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, APPLY_COMMAND)
  const fleet = await loadFleet(p.positionals[0] ?? DEFAULT_FLEET_FILE)
  const ttlMs = duration(p, 'ttl', 24 * HOUR)
  if (ttlMs < MINUTE || ttlMs > 30 * 24 * HOUR)
    throw new UsageError(`--ttl must be from 1m to 30d, got "${str(p, 'ttl')}"`)
  const settings = deploySettings(p)
  return withClient(home, p, async (client) => {
    const { plan, work, tokenDir } = await prepare(client, fleet, p)
    if (plan.changes === 0) {
      output(settings.json, { plan, tokens: {}, rollouts: [] }, () => formatPlan(plan))
      return 0
    }
    settings.progress(formatPlan(plan))
    for (const w of work)
      await beforeSubmit(async () => {
        if ((await uploadBlob(client, w.archive, settings.progress)) === 'already-stored')
          settings.progress(`channel ${w.name}: archive already on the coordinator`)
      })
    const newcomers = plan.machines.filter((m) => m.action === 'enroll')
    const tokens =
      tokenDir === undefined ? {} : await writeTokens(client.home, newcomers, resolve(tokenDir), ttlMs)
    for (const [machine, path] of Object.entries(tokens))
      settings.progress(`${machine}: enrollment token written to ${path}`)
    let code = 0
    const rollouts: { channel: string; rolloutId: string; machines: string[] }[] = []
    for (const w of work) {
      const payload = {
        kind: 'archive' as const,
        sha256: w.archive.sha256,
        size: w.archive.size,
        sources: [{ kind: 'coordinator' as const }],
      }
      const rolloutId = randomId()
      rollouts.push({ channel: w.name, rolloutId, machines: w.machines })
      settings.progress(`channel ${w.name}: rollout ${rolloutId} to ${w.machines.join(', ')}`)
      // in waves when the channel has a rollout policy, as deploy --waves
      const followed = await rollOut(client, rolloutId, [{ ...w.fields, payload }], {
        ...settings,
        waves: w.waves,
      })
      if (followed !== 0 && code === 0) code = followed
    }
    // one line: with --json, stdout is JSON lines (the rollouts' watch events, then this)
    const summary = { plan, tokens, rollouts }
    process.stdout.write(
      settings.json ? `${JSON.stringify(summary)}\n` : `applied: ${plan.changes} machine(s) changed\n`,
    )
    return code
  })
}
