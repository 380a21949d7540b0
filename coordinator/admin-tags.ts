/**
 * The admin ops on machine tags: `set-tags` (signed tag records, protocol/machine-tags.ts,
 * all stored or none) and `tag-versions` (the versions to number new records above).
 * The coordinator runs the same rules on a record as the agent will, against the
 * machine as it knows it, so an admin learns of a refusal now and not from the
 * device; it cannot change tags itself, since agents take only records an admin
 * signed. admin-rpc.ts authenticates, audits and answers, then pushes the
 * records to the machines' agents (control.ts).
 */
import type { Authority, PublicKey } from '../keys/index.ts'
import {
  type AdminOp,
  type AdmittedMachineTags,
  admitMachineTags,
  openMachineTags,
  type SetTagsResult,
  type TagVersions,
} from '../protocol/index.ts'
import { AdminDenied } from './admin-context.ts'
import { coverage } from './machine-scope.ts'
import type { TagChange } from './sqlite-tags.ts'
import type { FleetStore } from './store.ts'

export interface TagsInit {
  store: FleetStore
  fleetId: string
  fleetRoot: PublicKey
}

export interface TagsOutcome {
  result: SetTagsResult | TagVersions
  /** For the audit log: who changed which machine's tags from what to what. */
  detail: string
  /** Machines whose tags changed, to push their new record to. */
  changed: string[]
}

const list = (tags: readonly string[]) => `[${tags.join(', ')}]`

export async function runTagsOp(
  init: TagsInit,
  caller: { authority: Authority; signer: PublicKey },
  body: Extract<AdminOp, { op: 'set-tags' | 'tag-versions' }>,
  now = Date.now(),
): Promise<TagsOutcome> {
  if (body.op === 'tag-versions') return tagVersions(init, caller.authority, body.machines)
  const admitted = await admitTagRecords(init, caller, body.records, now)
  await init.store.machineTags.apply(admitted.changes)
  return { result: { changed: admitted.changed }, detail: admitted.detail, changed: admitted.machines }
}

/** Tag records checked against the machines as stored, ready to store (all or none). */
export interface AdmittedTags {
  changes: TagChange[]
  changed: SetTagsResult['changed']
  /** For the audit log: who changed which machine's tags from what to what. */
  detail: string
  machines: string[]
}

/**
 * Runs the rules an agent will run on each record (signed by the caller, one per
 * machine, enrolled, numbered above the last): set-tags' and apply's admission.
 */
export async function admitTagRecords(
  init: TagsInit,
  caller: { signer: PublicKey },
  records: readonly Uint8Array[],
  now: number,
): Promise<AdmittedTags> {
  const { store } = init
  const revokedSerials = await store.revokedSerials()
  const revocations = await store.revocationLog.state()
  const admitted: { from: string[]; tags: AdmittedMachineTags }[] = []
  for (const envelope of records) {
    // Opened first to learn which machine it is for; the rules below take it opened.
    const opened = openMachineTags(envelope)
    const { value: record, signer } = opened
    if (!signer.equals(caller.signer))
      throw new AdminDenied('bad-request', 'a tag record must be signed by the admin who sends it')
    if (admitted.some((a) => a.tags.record.machine === record.machine))
      throw new AdminDenied('bad-request', `two tag records for ${record.machine} in one request`)
    const machine = await store.getMachine(record.machine)
    if (machine === undefined)
      throw new AdminDenied(
        'unknown-machine',
        `no machine named "${record.machine}" is enrolled; new machines get their tags in their enrollment token`,
      )
    const version = (await store.machineTags.get(machine.name))?.version ?? 0
    const tags = admitMachineTags(
      envelope,
      {
        fleetRoot: init.fleetRoot,
        fleetId: init.fleetId,
        revokedSerials,
        revocations,
        now,
        machine: { name: machine.name, tags: machine.tags, version },
      },
      opened,
    )
    admitted.push({ from: machine.tags, tags })
  }
  const changes = admitted.map(({ from, tags: t }) => ({
    machine: t.record.machine,
    from,
    tags: t.record.tags,
    version: t.record.version,
    envelope: t.envelope,
    signedBy: t.signer.toString(),
    at: now,
  }))
  const changed = changes.map((c) => ({ machine: c.machine, from: c.from, to: c.tags, version: c.version }))
  const signedBy = admitted[0]?.tags.adminName ?? ''
  return {
    changes,
    changed,
    detail: `signed by "${signedBy}": ${changed
      .map((c) => `${c.machine} ${list(c.from)} → ${list(c.to)} (tag record version ${c.version})`)
      .join('; ')}`,
    machines: changed.map((c) => c.machine),
  }
}

/** The last accepted version of each machine asked about that the caller covers (0: none since enrollment). */
async function tagVersions(init: TagsInit, authority: Authority, names: string[]): Promise<TagsOutcome> {
  const versions = await init.store.machineTags.versions()
  const result: TagVersions = {}
  const covers = await coverage(init.store, authority)
  for (const name of names) if (covers(name)) result[name] = versions.get(name) ?? 0
  return { result, detail: `${Object.keys(result).length} machines`, changed: [] }
}
