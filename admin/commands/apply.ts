/**
 * `fleetmesh apply <fleet.json>`: carry out what `plan` shows. Everything that
 * can fail is checked before anything changes: the file, the payloads (each
 * nixMap channel's map against its machines, and its closures: in the local
 * store or complete in the coordinator's cache), what the coordinator knows,
 * and this admin's certificate for every machine and tag it touches, and the
 * signed tag records of enrolled machines whose tags change. Then the archives
 * are uploaded and the closures pushed (content-addressed: alone they change no
 * machine), the enrollment tokens written, and the tag records and one rollout
 * per channel (its one manifest; a nixMap channel's carries the closure map) sent
 * in one request, which the coordinator stores all or none (apply-submit.ts).
 * Each rollout is then followed as deploy follows its own.
 * docs/fleet-file.md says what is atomic. */
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
import {
  admitMachineTags,
  MachineTagsRefusedError,
  normaliseTags,
  type SubmitResult,
  sealMachineTags,
  type WavePolicy,
} from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import { channelPolicy, channelSettings } from '../fleet-channel.ts'
import { DEFAULT_FLEET_FILE, type LoadedFleet, loadFleet } from '../fleet-command.ts'
import type { ChannelEntry, FleetFile } from '../fleet-file.ts'
import { type FleetPlan, formatPlan, type MachinePlan, planFleet } from '../fleet-plan.ts'
import type { AdminHome } from '../home.ts'
import { channelNixMaps } from '../nix-map.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'
import { fileSource, type UploadSource, uploadBlob } from '../upload.ts'
import { submitApply } from './apply-submit.ts'
import {
  checkNixClosures,
  NixDeployError,
  type NixManifestCommon,
  type NixRelease,
  nixMapManifests,
  nixRelease,
  pushNixClosures,
} from './deploy-nix.ts'
import { DEPLOY_OPTIONS, deploySettings } from './deploy-options.ts'
import { beforeSubmit, followRollout, type ManifestFields } from './rollout.ts'
import { followSubmittedWaves } from './rollout-waves.ts'

const USAGE =
  'fleetmesh apply [<fleet.json>] [--tokens <dir>] [--ttl 24h] [--no-watch] [--timeout 15m] [--json]'

export const APPLY_COMMAND: CommandSpec = {
  name: 'apply',
  summary:
    'Carry out a fleet file: enrollment tokens for new machines, tag changes, then one rollout per channel.',
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
    'A "nixMap" channel goes out as deploy --nix-map (mode switch; with a "rollout", as deploy --nix-map --waves): ' +
      'closures are pushed from the local Nix store ' +
      'into the coordinator\'s cache, or must be complete there; it needs a Nix key ("fleetmesh nix keygen").',
    'Tag changes of enrolled machines are records this admin signs (it needs "enroll" on the old and the new tags); ' +
      'the coordinator stores them all or none, and each agent checks its own before using the new tags.',
    "Refused, with nothing changed: anything outside this admin's certificate.",
    "--json prints JSON lines: the rollouts' watch events, then a summary {plan, tokens, tags, rollouts}.",
    "exit codes: those of deploy (watching each channel's rollout in turn); 0 when there was nothing to do.",
  ],
  examples: ['fleetmesh apply fleet.json --tokens ./tokens', 'fleetmesh plan fleet.json && echo up to date'],
}

const MINUTE = 60_000
const HOUR = 3_600_000

/** A channel's payload: one archive for all its machines, or a closure per machine (its nixMap). */
type ChannelPayload =
  | { kind: 'archive'; source: UploadSource }
  | { kind: 'nix'; byMachine: [machine: string, storePath: string][] }

/** What apply does for one channel: its payload, and the machines that get it. */
interface ChannelWork {
  name: string
  entry: ChannelEntry
  machines: string[]
  payload: ChannelPayload
  common: NixManifestCommon & { generation: string }
  /** The channel's rollout policy; undefined: every machine at once */
  waves: WavePolicy | undefined
}

/** The Nix side of an apply: how its closures go out, and those to push from the local store. */
interface NixWork {
  release: NixRelease
  local: string[]
}

/**
 * The payload of a channel that deploys to `machines` now. A closure map is
 * narrowed to them (channelNixMaps checked it names exactly the channel's machines).
 */
async function channelPayload(
  file: FleetFile,
  name: string,
  entry: ChannelEntry,
  machines: string[],
  maps: Map<string, Map<string, string>>,
): Promise<ChannelPayload> {
  if (entry.archive === undefined) {
    const map = maps.get(name) ?? new Map<string, string>()
    return { kind: 'nix', byMachine: machines.map((m) => [m, map.get(m) as string]) }
  }
  const path = resolve(file.dir, entry.archive)
  try {
    await inspectTarArchive(path)
  } catch (err) {
    const why = err instanceof TarArchiveError ? err.message : `cannot be read (${(err as Error).message})`
    throw new UsageError(
      `${file.where(['channels', name, 'archive'])}: channels.${name}.archive: ${path}: ${why}; nothing was changed`,
    )
  }
  return { kind: 'archive', source: await fileSource(path) }
}

/**
 * The nixMap channels' closures, checked before anything changes: the admin
 * has a Nix key to sign or trust them with, and each is in the local store (to
 * be pushed) or complete in the coordinator's cache.
 */
async function checkNix(
  client: AdminClient,
  home: string,
  work: ChannelWork[],
): Promise<NixWork | undefined> {
  const nix = work.flatMap((w) =>
    w.payload.kind === 'nix' ? [{ name: w.name, byMachine: w.payload.byMachine }] : [],
  )
  if (nix.length === 0) return undefined
  const refused = (what: string, err: unknown): never => {
    if (!(err instanceof NixDeployError)) throw err
    throw new UsageError(`apply refused, nothing was changed: ${what}: ${err.message}`, { cause: err })
  }
  const release = await nixRelease(home).catch((err) => refused(`channel ${nix[0]?.name}`, err))
  const local: string[] = []
  for (const c of nix) {
    const paths = c.byMachine.map(([, path]) => path)
    const found = await beforeSubmit(() => checkNixClosures(client, paths, release, () => {})).catch((err) =>
      refused(`channel ${c.name}`, err),
    )
    local.push(...found)
  }
  return { release, local: [...new Set(local)] }
}

/** The plan sends the machine its channel's release: it changes generation, or is new and has one. */
const getsRelease = (m: MachinePlan) => m.deploy || (m.action === 'enroll' && m.desired !== null)

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
    if (getsRelease(m))
      check(`deploy ${m.desired} to ${m.machine}`, {
        ...base,
        capability: 'deploy',
        target: { kind: 'machine', name: m.machine, tags: m.tags },
      })
  }
  return refusals
}

// ---------------------------------------------------------------- tag changes

/** An enrolled machine whose tags the plan changes, with its tag record signed and checked. */
interface Retag {
  machine: string
  from: string[]
  to: string[]
  envelope: Uint8Array
}

const tagChange = (m: MachinePlan) =>
  [...m.tagsAdded.map((t) => `+${t}`), ...m.tagsRemoved.map((t) => `-${t}`)].join(' ')

/**
 * One signed tag record per enrolled machine whose tags change, numbered above
 * the version the coordinator last accepted, and checked here with the rules
 * the coordinator and the agent run (protocol/machine-tags.ts): all before
 * anything is sent. Refusals go to `problems`.
 */
async function signTags(client: AdminClient, plan: FleetPlan, problems: string[]): Promise<Retag[]> {
  const machines = plan.machines.filter((m) => m.enrolled && m.tagsAdded.length + m.tagsRemoved.length > 0)
  if (machines.length === 0) return []
  const versions = await beforeSubmit(() => client.tagVersions(machines.map((m) => m.machine)))
  const { home } = client
  const { fleetId } = home.fleet
  const now = Date.now()
  const retags: Retag[] = []
  for (const m of machines) {
    const from = normaliseTags([...m.tags.filter((t) => !m.tagsAdded.includes(t)), ...m.tagsRemoved])
    const version = versions[m.machine] ?? 0
    const record = {
      v: 1 as const,
      fleetId,
      machine: m.machine,
      tags: normaliseTags(m.tags),
      version: version + 1,
    }
    const envelope = sealMachineTags({ ...record, issuedAt: now }, home.key, home.chain)
    try {
      const policy = {
        fleetRoot: home.fleetRoot,
        fleetId,
        now,
        machine: { name: m.machine, tags: from, version },
      }
      admitMachineTags(envelope, policy)
      retags.push({ machine: m.machine, from, to: record.tags, envelope })
    } catch (err) {
      if (!(err instanceof MachineTagsRefusedError)) throw err
      problems.push(`${m.machine}: tags ${tagChange(m)}: ${err.code}: ${err.message}`)
    }
  }
  return retags
}

interface Prepared {
  plan: FleetPlan
  work: ChannelWork[]
  nix: NixWork | undefined
  tokenDir: string | undefined
  retags: Retag[]
}

async function prepare(
  client: AdminClient,
  fleet: LoadedFleet,
  maps: Map<string, Map<string, string>>,
  p: Parsed,
  home: string,
): Promise<Prepared> {
  const { file } = fleet
  const plan = planFleet(file, fleet.machines, await beforeSubmit(() => client.machines()))
  const problems = scopeRefusals(client.home, plan)
  const retags = await signTags(client, plan, problems)
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
    const machines = plan.machines.filter((m) => m.channel === name && getsRelease(m)).map((m) => m.machine)
    if (machines.length === 0) continue
    const settings = channelSettings(file, name, entry)
    const waves = channelPolicy(file, name, entry)
    work.push({
      waves,
      name,
      entry,
      machines,
      payload: await channelPayload(file, name, entry, machines, maps),
      common: {
        generation: entry.generation,
        healthCheck: settings.healthCheck,
        confirmTimeoutMs: settings.confirmTimeoutMs,
        validForMs: settings.validForMs,
        windows: file.windows,
      },
    })
  }
  return { plan, work, nix: await checkNix(client, home, work), tokenDir, retags }
}

/**
 * A channel's one manifest: an archive for its machines, or one carrying the
 * closure map of a nixMap channel (each machine takes its own path), so that an
 * apply of many machines still fits the one request it is stored all or none from.
 */
function oneManifest(w: ChannelWork, nix: NixWork | undefined): ManifestFields {
  const { payload, common } = w
  if (payload.kind === 'nix') {
    if (nix === undefined) throw new Error(`channel ${w.name}: its closures were not checked`)
    const [manifest] = nixMapManifests(payload.byMachine, nix.release, common, true)
    if (manifest === undefined) throw new Error(`channel ${w.name}: no machine to deploy to`)
    return manifest
  }
  const { sha256, size } = payload.source
  const archive = { kind: 'archive' as const, sha256, size, sources: [{ kind: 'coordinator' as const }] }
  return { ...common, targets: { machines: w.machines, tags: [] }, payload: archive }
}

/** Tokens for the plan's new machines, in `dir` (created 0700); their paths, by machine. */
async function writeTokens(home: AdminHome, plan: MachinePlan[], dir: string, ttlMs: number) {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const written: Record<string, string> = {}
  for (const m of plan) {
    const token = issueToken(home.key, home.chain, {
      fleetRoot: home.fleetRoot,
      coordinator: home.fleet.coordinator,
      // the others of the signed list: the agent enrolls through one of them when this one is down
      others: home.coordinators,
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
  const maps = await channelNixMaps(fleet.file, fleet.machines)
  const ttlMs = duration(p, 'ttl', 24 * HOUR)
  if (ttlMs < MINUTE || ttlMs > 30 * 24 * HOUR)
    throw new UsageError(`--ttl must be from 1m to 30d, got "${str(p, 'ttl')}"`)
  const settings = deploySettings(p)
  return withClient(home, p, async (client) => {
    const { plan, work, nix, tokenDir, retags } = await prepare(client, fleet, maps, p, home)
    if (plan.changes === 0) {
      output(settings.json, { plan, tokens: {}, tags: [], rollouts: [] }, () => formatPlan(plan))
      return 0
    }
    settings.progress(formatPlan(plan))
    for (const w of work) {
      const { payload } = w
      if (payload.kind === 'archive')
        await beforeSubmit(async () => {
          if ((await uploadBlob(client, payload.source, settings.progress)) === 'already-stored')
            settings.progress(`channel ${w.name}: archive already on the coordinator`)
        })
    }
    // like the uploads, a push into the cache changes no machine
    if (nix !== undefined) await beforeSubmit(() => pushNixClosures(client, nix.local, nix.release, settings))
    const newcomers = plan.machines.filter((m) => m.action === 'enroll')
    const tokens =
      tokenDir === undefined ? {} : await writeTokens(client.home, newcomers, resolve(tokenDir), ttlMs)
    for (const [machine, path] of Object.entries(tokens))
      settings.progress(`${machine}: enrollment token written to ${path}`)
    // after everything that can fail on this side: the first change to machines, all or none
    const applied = await submitApply(
      client,
      retags.map((r) => r.envelope),
      work.map((w) => ({ channel: w.name, fields: oneManifest(w, nix), waves: w.waves })),
      settings.progress,
    )
    for (const r of retags)
      settings.progress(`${r.machine}: tags [${r.from.join(', ')}] → [${r.to.join(', ')}]`)
    let code = 0
    const rollouts: { channel: string; rolloutId: string; machines: string[] }[] = []
    for (const [i, w] of work.entries()) {
      const result = applied.rollouts[i] as SubmitResult
      const { rolloutId } = result
      rollouts.push({ channel: w.name, rolloutId, machines: w.machines })
      settings.progress(`channel ${w.name}: rollout ${rolloutId} to ${w.machines.join(', ')}`)
      // followed as deploy follows its own: in waves when the channel has a rollout policy
      const followed =
        w.waves === undefined
          ? await followRollout(client, { rolloutId, results: [result] }, settings)
          : await followSubmittedWaves(client, result, w.waves, settings)
      if (followed !== 0 && code === 0) code = followed
    }
    // one line: with --json, stdout is JSON lines (the rollouts' watch events, then this)
    const tags = retags.map(({ machine, from, to }) => ({ machine, from, to }))
    const summary = { plan, tokens, tags, rollouts }
    process.stdout.write(
      settings.json ? `${JSON.stringify(summary)}\n` : `applied: ${plan.changes} machine(s) changed\n`,
    )
    return code
  })
}
