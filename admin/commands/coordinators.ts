/**
 * `fleetmesh coordinators add|list`: which coordinators serve the fleet, as the
 * fleet root signs it (protocol/coordinator-list.ts). `add` runs where root.key
 * is (the machine that ran init): it makes the new coordinator's identity and
 * state directory and signs the next list with it; `list` shows the list this
 * home holds, verified.
 */
import { join, resolve } from 'node:path'
import { loadIdentity, PrivateKey, PublicKey, saveIdentity } from '../../keys/index.ts'
import {
  type CommandSpec,
  ensureDir,
  fileSize,
  flag,
  list,
  output,
  parseCommand,
  required,
  UsageError,
  writeJsonAtomic,
} from '../../lib/index.ts'
import { checkAddresses } from '../../net/index.ts'
import {
  COORDINATOR_CONFIG_FILE,
  COORDINATOR_LIST_FILE,
  type CoordinatorConfig,
  type CoordinatorList,
  IDENTITY_FILE,
  readCoordinatorList,
  signCoordinatorList,
  writeCoordinatorList,
} from '../../protocol/index.ts'
import { HomeError, loadAdminHome, paths, readFleetFile } from '../home.ts'

const ADD_USAGE = 'fleetmesh coordinators add --state <dir> --addr <multiaddr>... [--json]'

export const COORDINATORS_ADD_COMMAND: CommandSpec = {
  name: 'coordinators add',
  summary: 'Add a coordinator to the fleet: its identity, its state directory, a new root-signed list.',
  usage: ADD_USAGE,
  options: {
    state: {
      type: 'string',
      value: '<dir>',
      description: 'state directory to create for the new coordinator',
      required: true,
    },
    addr: {
      type: 'string',
      multiple: true,
      value: '<multiaddr>',
      description: 'address agents and admins dial to reach the new coordinator',
      required: true,
    },
    json: { type: 'boolean', description: 'print machine-readable JSON' },
  },
  notes: [
    'Needs the fleet root key (root.key in --home). Start the new coordinator with the --store and --blobs',
    'of the others; it brings the new list into the database, where every coordinator reads it. Give',
    `<home>/${COORDINATOR_LIST_FILE} to the other admins: their CLIs then reach any listed coordinator.`,
  ],
  examples: [
    'fleetmesh coordinators add --state /var/lib/fleetmesh-coordinator-2 --addr /ip4/203.0.113.8/tcp/4001',
  ],
}

export const COORDINATORS_LIST_COMMAND: CommandSpec = {
  name: 'coordinators list',
  summary: "List the fleet's coordinators, as the fleet root's signed list in --home names them.",
  usage: 'fleetmesh coordinators list [--json]',
  options: { json: { type: 'boolean', description: 'print machine-readable JSON' } },
  examples: ['fleetmesh coordinators list --json'],
}

const exists = async (path: string) => (await fileSize(path)) !== undefined

export async function coordinatorsAdd(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, COORDINATORS_ADD_COMMAND)
  const stateDir = resolve(required(p, 'state', ADD_USAGE))
  const addrs = list(p, 'addr')
  if (addrs.length === 0 || addrs.length > 16)
    throw new UsageError(`give 1 to 16 --addr\nusage: ${ADD_USAGE}`)
  checkAddresses(addrs, '--addr')
  const rootPath = paths(home).rootKey
  if (!(await exists(rootPath)))
    throw new HomeError(
      `${rootPath} is missing: only the fleet root key may add a coordinator; run this where "fleetmesh init" ran`,
    )
  const root = await loadIdentity(rootPath)
  const fleet = await readFleetFile(home)
  const fleetRoot = PublicKey.parse(fleet.fleetRoot)
  if (!root.publicKey.equals(fleetRoot))
    throw new HomeError(`${rootPath} is not the root key of fleet "${fleet.fleetId}" (${fleet.fleetRoot})`)
  const keyPath = join(stateDir, IDENTITY_FILE)
  if (await exists(keyPath)) throw new HomeError(`${keyPath} already exists; choose an empty --state`)
  const current = await readCoordinatorList(home, { fleetRoot, fleetId: fleet.fleetId })
  const base = current?.list ?? { version: 0, coordinators: [fleet.coordinator] }

  await ensureDir(stateDir)
  const key = PrivateKey.generate()
  await saveIdentity(keyPath, key)
  // no new-fleet marker: this coordinator joins a fleet its database already holds
  const config: CoordinatorConfig = { fleetId: fleet.fleetId, fleetRoot: fleet.fleetRoot, listen: addrs }
  await writeJsonAtomic(join(stateDir, COORDINATOR_CONFIG_FILE), config, 0o600)
  const next: CoordinatorList = {
    fleetId: fleet.fleetId,
    version: base.version + 1,
    issuedAt: Date.now(),
    coordinators: [...base.coordinators, { peerId: key.toPeerId().toString(), addrs }],
  }
  const envelope = signCoordinatorList(root, next)
  await writeCoordinatorList(stateDir, envelope)
  await writeCoordinatorList(home, envelope)
  output(flag(p, 'json'), { ...next, state: stateDir }, () =>
    [
      `coordinator ${key.toPeerId()} added to fleet "${fleet.fleetId}" (coordinator list version ${next.version})`,
      `  state   ${stateDir}  (start it with: fleetmesh coordinator --state ${stateDir} --store <the fleet's database> --blobs <the shared blob directory>)`,
      `  list    ${join(home, COORDINATOR_LIST_FILE)}  (give it to the other admins)`,
    ].join('\n'),
  )
}

export async function coordinatorsList(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, COORDINATORS_LIST_COMMAND)
  const me = await loadAdminHome(home)
  const stored = await readCoordinatorList(home, { fleetRoot: me.fleetRoot, fleetId: me.fleet.fleetId })
  const version = stored?.list.version ?? null
  output(flag(p, 'json'), { fleetId: me.fleet.fleetId, version, coordinators: me.coordinators }, () =>
    [
      `fleet "${me.fleet.fleetId}": ${me.coordinators.length} coordinator(s)` +
        (version === null
          ? " (no signed list in this home: only the fleet file's)"
          : `, list version ${version}`),
      ...me.coordinators.map((c) => `  ${c.peerId}  ${c.addrs.join(' ')}`),
    ].join('\n'),
  )
}
