/**
 * `fleetmesh <command>`: the only place that knows all the roles. It routes to
 * the coordinator, relay or agent daemon or the admin commands, and turns typed
 * errors into one clear line and an exit code.
 */

import { adminCommandNames, adminHelp, runAdminCommand } from '../admin/cli.ts'
import { defaultHome } from '../admin/home.ts'
import { agentCommand } from '../agent/cli.ts'
import { coordinatorCommand } from '../coordinator/cli.ts'
import { DirLockError, FLEETMESH_VERSION, HelpRequested, suggestion, UsageError } from '../lib/index.ts'
import { doctorCommand } from '../net/index.ts'
import { relayCommand } from '../relay/cli.ts'

function help(): string {
  const rows = [
    ['coordinator', 'run the coordinator daemon'],
    ['relay', 'run a relay: reachability for peers behind NAT, and the DHT that finds them'],
    [
      'doctor',
      'on an agent, coordinator or relay: addresses, NAT behaviour, reservations, path to the coordinator',
    ],
    ['agent', 'run the agent daemon on a device (enrolls on first start with --token)'],
    ...adminHelp(),
  ]
  return [
    'usage: fleetmesh [--home <dir>] <command> [options]',
    '       fleetmesh help <command>      (the same as fleetmesh <command> --help)',
    '       fleetmesh --version',
    '',
    ...rows.map(([k, v]) => `  ${(k as string).padEnd(16)} ${v}`),
    '',
    'Admin commands keep keys in --home (default $FLEETMESH_HOME or ~/.config/fleetmesh). Add --json for scripts.',
  ].join('\n')
}

const DAEMONS: Record<string, (argv: string[]) => Promise<number>> = {
  coordinator: coordinatorCommand,
  relay: relayCommand,
  doctor: doctorCommand,
  agent: agentCommand,
}

function versionLine(): string {
  return `fleetmesh ${FLEETMESH_VERSION} (node ${process.versions.node})`
}

export async function main(argv: string[]): Promise<number> {
  let args = [...argv]
  let home = defaultHome()
  if (args[0] === '--home') {
    if (args[1] === undefined) {
      process.stderr.write('--home needs a directory\n')
      return 2
    }
    home = args[1]
    args = args.slice(2)
  }
  if (args[0] === 'help' && args[1] !== undefined) args = [...args.slice(1), '--help']
  const [command, ...rest] = args
  try {
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      process.stdout.write(`${help()}\n`)
      return command === undefined ? 2 : 0
    }
    if (command === 'version' || command === '--version') {
      process.stdout.write(`${versionLine()}\n`)
      return 0
    }
    const daemon = DAEMONS[command]
    if (daemon !== undefined) return await daemon(rest)
    const code = await runAdminCommand(command, rest, home)
    if (code === undefined) {
      const known = [...Object.keys(DAEMONS), ...adminCommandNames(), 'help', 'version']
      throw new UsageError(
        `unknown command '${command}'${suggestion(command, known)}\n(fleetmesh --help lists the commands)`,
      )
    }
    return code
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(`${err.text}\n`)
      return 0
    }
    const e = err as Error
    // the message already says which daemon holds the directory and what to do
    if (e instanceof UsageError || e instanceof DirLockError) {
      process.stderr.write(`fleetmesh: ${e.message}\n`)
      return e instanceof UsageError ? 2 : 1
    }
    const code = 'code' in e && typeof e.code === 'string' ? ` [${e.code}]` : ''
    process.stderr.write(`fleetmesh: ${e.name}${code}: ${e.message}\n`)
    if (process.env.FLEETMESH_DEBUG) process.stderr.write(`${e.stack}\n`)
    return 1
  }
}
