/** `fleetmesh enroll`: issue a single-use enrollment token for a machine, offline. */
import { resolve } from 'node:path'
import { issueToken, machineName, tagName, verifyChain } from '../../keys/index.ts'
import {
  type CommandSpec,
  duration,
  flag,
  list,
  output,
  type Parsed,
  parseCommand,
  str,
  UsageError,
  writeFileAtomic,
} from '../../lib/index.ts'
import { loadAdminHome } from '../home.ts'
import { ALL_MACHINES } from './deploy-targets.ts'

const ENROLL_USAGE = 'fleetmesh enroll <machine> [--tag <tag>]... [--ttl 24h] [--out <file>] [--json]'

const MINUTE = 60_000
const HOUR = 3_600_000
/**
 * A token must outlive the trip to the device, and should not outlive it by
 * much: whoever holds it can enroll a machine until it expires or is used.
 */
const TTL_RANGE = { min: MINUTE, max: 30 * 24 * HOUR }

/** --ttl, within TTL_RANGE: "0s" would issue a token that has already expired. */
function tokenTtl(p: Parsed): number {
  const ttlMs = duration(p, 'ttl', 24 * HOUR)
  if (ttlMs < TTL_RANGE.min || ttlMs > TTL_RANGE.max)
    throw new UsageError(`--ttl must be from 1m to 30d, got "${str(p, 'ttl')}"`)
  return ttlMs
}

const validFor = (ms: number): string =>
  ms >= HOUR ? `${Math.round(ms / HOUR)} h` : `${Math.round(ms / MINUTE)} min`

export const ENROLL_COMMAND: CommandSpec = {
  name: 'enroll',
  summary:
    'Issue a single-use enrollment token for a machine; the device passes it to "fleetmesh agent --token".',
  usage: ENROLL_USAGE,
  options: {
    tag: {
      type: 'string',
      multiple: true,
      value: '<tag>',
      description: 'tag the machine carries (deploy --to tag:<tag>)',
    },
    ttl: {
      type: 'string',
      value: '<duration>',
      description: 'how long the token stays usable, from 1m to 30d',
      default: '24h',
    },
    out: {
      type: 'string',
      value: '<file>',
      description:
        'write the token to this file (mode 0600) instead of printing it; the agent reads it with --token @<file>',
    },
    json: { type: 'boolean', description: 'print machine-readable JSON' },
  },
  examples: [
    'fleetmesh enroll web-1 --tag web --tag eu --ttl 2h',
    'fleetmesh enroll web-2 --tag web --out web-2.token   # then: fleetmesh agent --state … --token @web-2.token',
  ],
}

export async function enroll(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, ENROLL_COMMAND)
  const machine = p.positionals[0]
  if (machine === undefined) throw new UsageError(`name the machine to enroll\nusage: ${ENROLL_USAGE}`)
  if (!machineName.safeParse(machine).success) {
    throw new UsageError(
      `"${machine}" is not a valid machine name: lowercase letters, digits and inner hyphens, at most 63`,
    )
  }
  if (machine === ALL_MACHINES)
    throw new UsageError(`"${ALL_MACHINES}" is reserved: "deploy --to all" means every enrolled machine`)
  const tags = list(p, 'tag')
  for (const t of tags)
    if (!tagName.safeParse(t).success) throw new UsageError(`--tag "${t}" is not a valid tag`)
  const ttlMs = tokenTtl(p)
  const me = await loadAdminHome(home)
  // Fail here, not on the device, when this admin may not enroll the machine.
  verifyChain(me.chain, {
    root: me.fleetRoot,
    signer: me.key.publicKey,
    capability: 'enroll',
    target: { kind: 'new-machine', name: machine, tags },
  })
  const token = issueToken(me.key, me.chain, {
    fleetRoot: me.fleetRoot,
    coordinator: me.fleet.coordinator,
    // the others of the signed list: the agent enrolls through one of them when this one is down
    others: me.coordinators,
    machine,
    tags,
    ttlMs,
  })
  const out = str(p, 'out')
  // A token enrolls a machine until it is used or expires: on disk it is a secret like a key.
  if (out !== undefined) await writeFileAtomic(resolve(out), `${token}\n`, 0o600)
  const described = `Enrollment token for "${machine}"${tags.length ? ` (tags ${tags.join(', ')})` : ''}, single use, valid ${validFor(ttlMs)}`
  output(
    flag(p, 'json'),
    {
      machine,
      tags,
      expiresAt: new Date(Date.now() + ttlMs).toISOString(),
      ...(out !== undefined ? { file: resolve(out) } : { token }),
    },
    () =>
      out !== undefined
        ? `${described}, written to ${resolve(out)}. On the device run:\n\n  fleetmesh agent --state /var/lib/fleetmesh --token @${resolve(out)}`
        : `${described}. On the device run:\n\n  fleetmesh agent --state /var/lib/fleetmesh --token ${token}`,
  )
}
