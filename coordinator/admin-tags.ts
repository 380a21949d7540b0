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
  const { store } = init
  const revokedSerials = await store.revokedSerials()
  const revocations = await store.revocationLog.state()
  const admitted: { from: string[]; tags: AdmittedMachineTags }[] = []
  for (const envelope of body.records) {
    // Opened once to learn which machine it is for; the rules below open it again.
    const { value: record, signer } = openMachineTags(envelope)
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
    const tags = admitMachineTags(envelope, {
      fleetRoot: init.fleetRoot,
      fleetId: init.fleetId,
      revokedSerials,
      revocations,
      now,
      machine: { name: machine.name, tags: machine.tags, version },
    })
    admitted.push({ from: machine.tags, tags })
  }
  await store.machineTags.apply(
    admitted.map(({ from, tags: t }) => ({
      machine: t.record.machine,
      from,
      tags: t.record.tags,
      version: t.record.version,
      envelope: t.envelope,
      signedBy: t.signer.toString(),
      at: now,
    })),
  )
  const changed = admitted.map(({ from, tags: t }) => ({
    machine: t.record.machine,
    from,
    to: t.record.tags,
    version: t.record.version,
  }))
  const signedBy = admitted[0]?.tags.adminName ?? ''
  return {
    result: { changed },
    detail: `signed by "${signedBy}": ${changed
      .map((c) => `${c.machine} ${list(c.from)} → ${list(c.to)} (tag record version ${c.version})`)
      .join('; ')}`,
    changed: changed.map((c) => c.machine),
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
