/**
 * `fleetmesh init`: create a fleet on this machine: the fleet root key, this
 * admin's key and certificate (every capability, whole fleet), and the
 * coordinator's identity and bootstrap file in its state directory.
 */
import { join, resolve } from 'node:path'
import {
  CAPABILITIES,
  issueCertificate,
  loadOrCreateIdentity,
  PrivateKey,
  saveIdentity,
} from '../../keys/index.ts'
import {
  type CommandSpec,
  duration,
  ensureDir,
  fileSize,
  flag,
  list,
  output,
  parseCommand,
  required,
  str,
  UsageError,
  writeFileAtomic,
  writeJsonAtomic,
} from '../../lib/index.ts'
import { checkAddresses } from '../../net/index.ts'
import {
  COORDINATOR_CONFIG_FILE,
  type CoordinatorConfig,
  IDENTITY_FILE,
  NEW_FLEET_FILE,
  signCoordinatorList,
  writeCoordinatorList,
} from '../../protocol/index.ts'
import { type FleetFile, HomeError, paths, writeAdminChain, writeFleetFile } from '../home.ts'

const YEAR = 365 * 86_400_000
const exists = async (path: string) => (await fileSize(path)) !== undefined

const INIT_USAGE =
  'fleetmesh init --fleet <id> --coordinator-state <dir> --coordinator-addr <multiaddr>... [--name <admin>] [--valid 365d] [--json]'

export const INIT_COMMAND: CommandSpec = {
  name: 'init',
  summary: 'Create a fleet: root key, your admin certificate, the coordinator identity.',
  usage: INIT_USAGE,
  options: {
    fleet: {
      type: 'string',
      value: '<id>',
      description: 'fleet id: lowercase letters, digits and dashes',
      required: true,
    },
    'coordinator-state': {
      type: 'string',
      value: '<dir>',
      description: 'state directory to create for the coordinator',
      required: true,
    },
    'coordinator-addr': {
      type: 'string',
      multiple: true,
      value: '<multiaddr>',
      description: 'address agents dial to reach the coordinator',
      required: true,
    },
    name: {
      type: 'string',
      value: '<admin>',
      description: 'your name on your admin certificate',
      default: 'owner',
    },
    valid: {
      type: 'string',
      value: '<duration>',
      description: 'how long your admin certificate is valid',
      default: '365d',
    },
    json: { type: 'boolean', description: 'print machine-readable JSON' },
  },
  examples: [
    'fleetmesh init --fleet acme --coordinator-state /var/lib/fleetmesh-coordinator --coordinator-addr /ip4/203.0.113.7/tcp/4001',
  ],
}

export async function init(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, INIT_COMMAND)
  const fleetId = required(p, 'fleet', INIT_USAGE)
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(fleetId))
    throw new UsageError(`--fleet "${fleetId}": use lowercase letters, digits and "-"`)
  const coordDir = resolve(required(p, 'coordinator-state', INIT_USAGE))
  const addrs = list(p, 'coordinator-addr')
  if (addrs.length === 0)
    throw new UsageError(
      `give at least one --coordinator-addr (e.g. /ip4/203.0.113.7/tcp/4001)\nusage: ${INIT_USAGE}`,
    )
  if (addrs.length > 16) throw new UsageError('give at most 16 --coordinator-addr')
  // every token carries these: a bad one would strand every agent enrolled with it
  checkAddresses(addrs, '--coordinator-addr')
  const p2 = paths(home)
  for (const f of [p2.fleet, p2.rootKey]) {
    if (await exists(f))
      throw new HomeError(`${f} already exists: this directory already holds a fleet. Use another --home.`)
  }
  const root = PrivateKey.generate()
  const admin = await loadOrCreateIdentity(p2.adminKey)
  const chain = [
    issueCertificate(root, {
      subject: admin.publicKey,
      name: str(p, 'name') ?? 'owner',
      capabilities: [...CAPABILITIES],
      scope: { all: true },
      notAfter: Date.now() + duration(p, 'valid', YEAR),
    }),
  ]
  await ensureDir(coordDir)
  const coordKeyPath = join(coordDir, IDENTITY_FILE)
  if (await exists(coordKeyPath))
    throw new HomeError(`${coordKeyPath} already exists; choose an empty --coordinator-state`)
  // Before the identity: only a directory init marked as new may get a fresh database.
  await writeFileAtomic(join(coordDir, NEW_FLEET_FILE), `fleet "${fleetId}": created by fleetmesh init\n`)
  const coordinator = PrivateKey.generate()
  await saveIdentity(coordKeyPath, coordinator)
  // the coordinator listens where the tokens will send agents
  const config: CoordinatorConfig = { fleetId, fleetRoot: root.publicKey.toString(), listen: addrs }
  await writeJsonAtomic(join(coordDir, COORDINATOR_CONFIG_FILE), config, 0o600)
  await saveIdentity(p2.rootKey, root)
  await writeAdminChain(home, chain)
  const fleet: FleetFile = {
    fleetId,
    fleetRoot: root.publicKey.toString(),
    coordinator: { peerId: coordinator.toPeerId().toString(), addrs },
  }
  await writeFleetFile(home, fleet)
  // the root-signed list of the fleet's coordinators, version 1: this one (`coordinators add` adds more)
  const listed = signCoordinatorList(root, {
    fleetId,
    version: 1,
    issuedAt: Date.now(),
    coordinators: [fleet.coordinator],
  })
  await writeCoordinatorList(coordDir, listed)
  await writeCoordinatorList(home, listed)
  output(
    flag(p, 'json'),
    { ...fleet, admin: admin.publicKey.toString(), home, coordinatorState: coordDir },
    () =>
      [
        `fleet "${fleetId}" created in ${home}`,
        `  fleet root key     ${p2.rootKey}  (move it offline; it only signs admin certificates)`,
        `  your admin key     ${admin.publicKey}  (all capabilities, whole fleet)`,
        `  coordinator        ${fleet.coordinator.peerId}`,
        `  coordinator state  ${coordDir}  (start it with: fleetmesh coordinator --state ${coordDir})`,
      ].join('\n'),
  )
}
