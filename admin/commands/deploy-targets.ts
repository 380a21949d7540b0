/**
 * `deploy --to`: what the operator named (machines, tags, or `all`), checked
 * against the machines enrolled now before anything is uploaded or signed.
 * `all` is expanded here, in the admin, to the names of the machines enrolled
 * now: a manifest carries only machine names and tags, so a machine enrolled
 * later never matches it (a tag is how to reach future members).
 */
import { machineName, tagName, verifyChain } from '../../keys/index.ts'
import { CodedError, UsageError } from '../../lib/index.ts'
import { type MachineView, type Targets, targetsMachine } from '../../protocol/index.ts'
import type { AdminClient } from '../client.ts'
import type { AdminHome } from '../home.ts'

/** The --to word that means every machine enrolled now. */
export const ALL_MACHINES = 'all'

/** What --to asked for, before it is checked against the enrolled machines. */
export interface TargetRequest {
  /** `--to all`: every machine enrolled now */
  all: boolean
  machines: string[]
  tags: string[]
  /** --allow-future-machines: sign even when no enrolled machine matches yet */
  allowFuture: boolean
}

export class DeployTargetError extends CodedError<'none-enrolled' | 'no-match'> {
  override name = 'DeployTargetError'
}

/** `--to edge-1,tag:lab` or `--to all` → a request, each name validated, sorted and deduplicated. */
export function parseTargets(items: string[], allowFuture: boolean, usage: string): TargetRequest {
  const machines: string[] = []
  const tags: string[] = []
  let all = false
  for (const item of items) {
    if (item === ALL_MACHINES) all = true
    else if (item.startsWith('tag:')) {
      const t = item.slice(4)
      if (!tagName.safeParse(t).success) throw new UsageError(`--to: "${t}" is not a valid tag`)
      tags.push(t)
    } else {
      if (!machineName.safeParse(item).success)
        throw new UsageError(`--to: "${item}" is not a valid machine name (use tag:<name> for tags)`)
      machines.push(item)
    }
  }
  if (!all && machines.length + tags.length === 0)
    throw new UsageError(`--to names no machines or tags\nusage: ${usage}`)
  if (all && allowFuture)
    throw new UsageError(
      '--to all means the machines enrolled now; --allow-future-machines goes with tags (--to tag:<name>)',
    )
  return { all, machines: [...new Set(machines)].sort(), tags: [...new Set(tags)].sort(), allowFuture }
}

function knownFleet(enrolled: readonly MachineView[]): string {
  const names = enrolled.map((m) => m.name).sort()
  const tags = [...new Set(enrolled.flatMap((m) => m.tags))].sort()
  return `enrolled machines: ${names.join(', ') || '(none)'}; their tags: ${tags.map((t) => `tag:${t}`).join(', ') || '(none)'}`
}

/**
 * Whether this admin's own certificate grants "deploy". When it does not, the
 * coordinator's refusal says more than a target check would, and the
 * coordinator audits the attempt.
 */
function grantsDeploy(home: AdminHome): boolean {
  try {
    verifyChain(home.chain, { root: home.fleetRoot, signer: home.key.publicKey, capability: 'deploy' })
    return true
  } catch {
    return false
  }
}

/**
 * The manifest targets for `request`: `all` becomes the names of the machines
 * enrolled now. Refuses, before anything is signed, targets that match no
 * enrolled machine, unless the operator allowed future machines.
 */
export async function resolveTargets(
  client: Pick<AdminClient, 'machines' | 'home'>,
  request: TargetRequest,
): Promise<Targets> {
  if (!request.all && !grantsDeploy(client.home)) return { machines: request.machines, tags: request.tags }
  const enrolled = await client.machines()
  if (request.all && enrolled.length === 0)
    throw new DeployTargetError(
      'none-enrolled',
      '--to all: no machines are enrolled yet, so there is nothing to deploy to; enroll machines first ("fleetmesh enroll <name>"), or target a tag they will carry with --to tag:<name> --allow-future-machines',
    )
  const machines = request.all
    ? [...new Set([...request.machines, ...enrolled.map((m) => m.name)])].sort()
    : request.machines
  const targets: Targets = { machines, tags: request.tags }
  if (request.allowFuture || enrolled.some((m) => targetsMachine(targets, m.name, m.tags))) return targets
  const named = [...machines, ...request.tags.map((t) => `tag:${t}`)].join(', ')
  throw new DeployTargetError(
    'no-match',
    `--to ${named} matches no enrolled machine; nothing was uploaded or signed. ${knownFleet(enrolled)}. ` +
      'To sign for machines that will be enrolled later with a tag, add --allow-future-machines.',
  )
}
