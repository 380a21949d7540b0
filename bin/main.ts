/**
 * `fleetmesh <command>`: the only place that knows all the roles. It routes to
 * the coordinator, relay or agent daemon or the admin commands, and turns typed
 * errors into one clear line and an exit code.
 */

import { adminCommandNames, adminHelp, adminSpecs, runAdminCommand } from '../admin/cli.ts'
import { defaultHome } from '../admin/home.ts'
import { AGENT_COMMAND, agentCommand } from '../agent/cli.ts'
import { COORDINATOR_COMMAND, coordinatorCommand } from '../coordinator/cli.ts'
import { STORE_COMMAND, storeCommand } from '../coordinator/store-cli.ts'
import {
  type CommandSpec,
  completionScript,
  DirLockError,
  FLEETMESH_VERSION,
  HelpRequested,
  isShell,
  type Options,
  parseCommand,
  SHELLS,
  suggestion,
  UsageError,
} from '../lib/index.ts'
import { RELAY_COMMAND, relayCommand } from '../relay/cli.ts'

function help(): string {
  const rows = [
    ['coordinator', 'run the coordinator daemon'],
    ['store', "migrate a coordinator's store, or copy a fleet from SQLite to PostgreSQL"],
    ['relay', 'run a relay: reachability for peers behind NAT, and the DHT that finds them'],
    ['agent', 'run the agent daemon on a device (enrolls on first start with --token)'],
    ...adminHelp(),
    ['completion', 'print the shell completion script for bash, zsh or fish'],
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

/** What may come before the command; main() reads --home itself, and completion offers all three. */
const GLOBAL_OPTIONS: Options = {
  home: {
    type: 'string',
    value: '<dir>',
    description: 'where admin commands keep keys and the fleet file',
    default: '$FLEETMESH_HOME or ~/.config/fleetmesh',
  },
  help: { type: 'boolean', description: 'list the commands' },
  version: { type: 'boolean', description: 'print the version' },
}

const COMPLETION_COMMAND: CommandSpec = {
  name: 'completion',
  summary:
    "Print the completion script for a shell: commands, their options and the options' values (files, choices).",
  usage: `fleetmesh completion ${SHELLS.join('|')}`,
  options: {},
  examples: [
    'fleetmesh completion bash > /etc/bash_completion.d/fleetmesh',
    'fleetmesh completion zsh > /usr/local/share/zsh/site-functions/_fleetmesh',
    'fleetmesh completion fish > ~/.config/fish/completions/fleetmesh.fish',
  ],
}

/**
 * `fleetmesh completion <shell>`: the script is generated from every command's spec,
 * so it offers exactly the options the parser accepts.
 */
async function completionCommand(argv: string[]): Promise<number> {
  const { positionals } = parseCommand(argv, COMPLETION_COMMAND)
  const [shell, ...extra] = positionals
  const usage = `usage: ${COMPLETION_COMMAND.usage}`
  if (shell === undefined)
    throw new UsageError(`name the shell to complete in: ${SHELLS.join(', ')}\n${usage}`)
  if (!isShell(shell))
    throw new UsageError(
      `unknown shell '${shell}': completion scripts exist for ${SHELLS.join(', ')}\n${usage}`,
    )
  if (extra.length > 0)
    throw new UsageError(`completion takes one shell, got ${positionals.join(' ')}\n${usage}`)
  const script = completionScript(shell, {
    program: 'fleetmesh',
    commands: routedSpecs(),
    globalOptions: GLOBAL_OPTIONS,
    helpWord: 'help',
  })
  process.stdout.write(script)
  return 0
}

/** The commands main() runs itself: the daemons and completion. Everything else is an admin command. */
const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  coordinator: coordinatorCommand,
  store: storeCommand,
  relay: relayCommand,
  agent: agentCommand,
  completion: completionCommand,
}

/** The spec of every command as main() routes it: its own first, then the admin commands they leave reachable. */
function routedSpecs(): CommandSpec[] {
  const own = [COORDINATOR_COMMAND, STORE_COMMAND, RELAY_COMMAND, AGENT_COMMAND, COMPLETION_COMMAND]
  return [...own, ...adminSpecs().filter((s) => COMMANDS[s.name.split(' ')[0] ?? ''] === undefined)]
}

function versionLine(): string {
  return `fleetmesh ${FLEETMESH_VERSION} (node ${process.versions.node})`
}

let stdoutWatched = false

/**
 * A reader that stops early (`fleetmesh --help | head`) closes our stdout; the
 * write then fails with EPIPE, which Node raises as an unhandled 'error' event and
 * a stack trace. Like other command-line tools, stop quietly instead.
 */
function endQuietlyOnClosedStdout(): void {
  // once per process: main() may run more than once in one (the help tests do)
  if (stdoutWatched) return
  stdoutWatched = true
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0)
    throw err
  })
}

export async function main(argv: string[]): Promise<number> {
  endQuietlyOnClosedStdout()
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
    const own = COMMANDS[command]
    if (own !== undefined) return await own(rest)
    const code = await runAdminCommand(command, rest, home)
    if (code === undefined) {
      const known = [...Object.keys(COMMANDS), ...adminCommandNames(), 'help', 'version']
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
