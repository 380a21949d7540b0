/**
 * `fleetmesh doctor`: what a machine sees of its network. With a machine name
 * it asks that machine's agent, over its control link through the coordinator
 * (a read the admin's certificate must cover); with `--state <dir>` it examines
 * a daemon on this machine (net/doctor.ts). Both print the same layout.
 */
import { type CommandSpec, flag, list, output, parseCommand, str, UsageError } from '../../lib/index.ts'
import { formatRemoteDoctor, LOCAL_DOCTOR_OPTIONS, localDoctor } from '../../net/index.ts'
import { machineArgument, REMOTE_OPTIONS, withClient } from '../session.ts'

const DOCTOR_USAGE = [
  'fleetmesh doctor <machine> [--coordinator <multiaddr>]... [--json]',
  '       fleetmesh doctor --state <dir> [--observer <ip:port>]... [--json]',
].join('\n')

export const DOCTOR_COMMAND: CommandSpec = {
  name: 'doctor',
  summary:
    'What a machine sees of its network: addresses, connections and their paths, hole punching, coordinator. A machine name asks that agent through the coordinator; --state <dir> examines a daemon here (exit 1 when it is not running).',
  usage: DOCTOR_USAGE,
  options: {
    state: {
      ...LOCAL_DOCTOR_OPTIONS.state,
      required: false,
      description: `${LOCAL_DOCTOR_OPTIONS.state.description} on this machine (instead of a machine name)`,
    },
    observer: {
      ...LOCAL_DOCTOR_OPTIONS.observer,
      description: `${LOCAL_DOCTOR_OPTIONS.observer.description} (with --state)`,
    },
    coordinator: {
      ...REMOTE_OPTIONS.coordinator,
      description: `${REMOTE_OPTIONS.coordinator.description} (with a machine name)`,
    },
    json: { type: 'boolean', description: 'print the report as JSON' },
  },
  examples: [
    'fleetmesh doctor edge-1',
    'fleetmesh doctor --state /var/lib/fleetmesh-agent --observer 203.0.113.7:4002',
  ],
}

export async function doctor(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, DOCTOR_COMMAND)
  const json = flag(p, 'json')
  const stateDir = str(p, 'state')
  const machine = machineArgument(p, 'doctor', DOCTOR_USAGE)
  const usage = `usage: ${DOCTOR_USAGE}`
  if (machine === undefined) {
    if (stateDir === undefined || stateDir === '')
      throw new UsageError(
        `name a machine to ask over the mesh, or give --state <dir> of a daemon here\n${usage}`,
      )
    if (list(p, 'coordinator').length > 0)
      throw new UsageError(`--coordinator is for asking a machine over the mesh, not for --state\n${usage}`)
    return await localDoctor(stateDir, list(p, 'observer'), json)
  }
  if (stateDir !== undefined) throw new UsageError(`give a machine name or --state <dir>, not both\n${usage}`)
  if (list(p, 'observer').length > 0)
    throw new UsageError(
      `--observer is for --state: a remote doctor runs no NAT probe (its hole-punching details show the last one)\n${usage}`,
    )
  const result = await withClient(home, p, (c) => c.doctor(machine))
  output(json, result, () => formatRemoteDoctor(result))
  return 0
}
