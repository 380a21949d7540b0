/** `fleetmesh enroll`: issue a single-use enrollment token for a machine, offline. */
import { issueToken, machineName, tagName, verifyChain } from '../../keys/index.ts'
import { type CommandSpec, duration, flag, list, output, parseCommand, UsageError } from '../../lib/index.ts'
import { loadAdminHome } from '../home.ts'
import { ALL_MACHINES } from './deploy-targets.ts'

const ENROLL_USAGE = 'fleetmesh enroll <machine> [--tag <tag>]... [--ttl 24h] [--json]'

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
      description: 'how long the token stays usable',
      default: '24h',
    },
    json: { type: 'boolean', description: 'print machine-readable JSON' },
  },
  examples: ['fleetmesh enroll web-1 --tag web --tag eu --ttl 2h'],
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
  const me = await loadAdminHome(home)
  // Fail here, not on the device, when this admin may not enroll the machine.
  verifyChain(me.chain, {
    root: me.fleetRoot,
    signer: me.key.publicKey,
    capability: 'enroll',
    target: { kind: 'new-machine', name: machine, tags },
  })
  const ttlMs = duration(p, 'ttl', 86_400_000)
  const token = issueToken(me.key, me.chain, {
    fleetRoot: me.fleetRoot,
    coordinator: me.fleet.coordinator,
    machine,
    tags,
    ttlMs,
  })
  output(
    flag(p, 'json'),
    { machine, tags, expiresAt: new Date(Date.now() + ttlMs).toISOString(), token },
    () =>
      [
        `Enrollment token for "${machine}"${tags.length ? ` (tags ${tags.join(', ')})` : ''}, single use, valid ${Math.round(ttlMs / 3_600_000)} h. On the device run:`,
        '',
        `  fleetmesh agent --state /var/lib/fleetmesh --token ${token}`,
      ].join('\n'),
  )
}
