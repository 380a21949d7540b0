/**
 * The admin CLI's routing. `bin/main.ts` hands `fleetmesh <command>` here for
 * everything except the daemons; each command lives in its own file under
 * commands/ and returns an exit code, or nothing for success.
 */
import {
  type CommandSpec,
  formatHelp,
  HelpRequested,
  suggestion,
  UsageError,
  wantsHelp,
} from '../lib/index.ts'
import {
  ADMIN_GRANT_COMMAND,
  ADMIN_INSTALL_COMMAND,
  ADMIN_KEYGEN_COMMAND,
  adminGrant,
  adminInstall,
  adminKeygen,
} from './commands/admin-keys.ts'
import { APPLY_COMMAND, apply } from './commands/apply.ts'
import { AUDIT_COMMAND, audit } from './commands/audit.ts'
import {
  COORDINATORS_ADD_COMMAND,
  COORDINATORS_LIST_COMMAND,
  coordinatorsAdd,
  coordinatorsList,
} from './commands/coordinators.ts'
import { deploy } from './commands/deploy.ts'
import { DEPLOY_COMMAND } from './commands/deploy-options.ts'
import { DOCTOR_COMMAND, doctor } from './commands/doctor.ts'
import { ENROLL_COMMAND, enroll } from './commands/enroll.ts'
import { EXPLAIN_COMMAND, explain } from './commands/explain.ts'
import { INIT_COMMAND, init } from './commands/init.ts'
import { INVENTORY_COMMAND, inventory } from './commands/inventory.ts'
import { LOG_COMMAND, LOGS_COMMAND, log, logs } from './commands/log.ts'
import { MACHINES_COMMAND, machines } from './commands/machines.ts'
import { NIX_KEYGEN_COMMAND, NIX_PUSH_COMMAND, nixKeygen, nixPush } from './commands/nix.ts'
import { PING_COMMAND, ping } from './commands/ping.ts'
import { PLAN_COMMAND, plan } from './commands/plan.ts'
import { REVOKE_COMMAND, revoke } from './commands/revoke.ts'
import {
  ROLLOUT_ABORT_COMMAND,
  ROLLOUT_LIST_COMMAND,
  ROLLOUT_PAUSE_COMMAND,
  ROLLOUT_RESUME_COMMAND,
  ROLLOUT_SHOW_COMMAND,
  rolloutAbort,
  rolloutList,
  rolloutPause,
  rolloutResume,
  rolloutShow,
} from './commands/rollout-command.ts'
import { UI_COMMAND, ui } from './commands/ui.ts'
import { WATCH_COMMAND, watch } from './commands/watch.ts'

/** Resolves to an exit code, or to nothing for success. */
type Command = (argv: string[], home: string) => Promise<unknown>

interface Entry {
  run: Command
  /** What --help prints, and the options the command parses */
  spec: CommandSpec
}

const COMMANDS: Record<string, Entry> = {
  init: { run: init, spec: INIT_COMMAND },
  enroll: { run: enroll, spec: ENROLL_COMMAND },
  machines: { run: machines, spec: MACHINES_COMMAND },
  deploy: { run: deploy, spec: DEPLOY_COMMAND },
  watch: { run: watch, spec: WATCH_COMMAND },
  logs: { run: logs, spec: LOGS_COMMAND },
  log: { run: log, spec: LOG_COMMAND },
  ping: { run: ping, spec: PING_COMMAND },
  doctor: { run: doctor, spec: DOCTOR_COMMAND },
  audit: { run: audit, spec: AUDIT_COMMAND },
  plan: { run: plan, spec: PLAN_COMMAND },
  apply: { run: apply, spec: APPLY_COMMAND },
  explain: { run: explain, spec: EXPLAIN_COMMAND },
  inventory: { run: inventory, spec: INVENTORY_COMMAND },
  ui: { run: ui, spec: UI_COMMAND },
}

/** `fleetmesh admin <subcommand>`. */
const ADMIN_SUBCOMMANDS: Record<string, Entry> = {
  keygen: { run: adminKeygen, spec: ADMIN_KEYGEN_COMMAND },
  grant: { run: adminGrant, spec: ADMIN_GRANT_COMMAND },
  install: { run: adminInstall, spec: ADMIN_INSTALL_COMMAND },
  revoke: { run: revoke, spec: REVOKE_COMMAND },
}

/** `fleetmesh nix <subcommand>`. */
const NIX_SUBCOMMANDS: Record<string, Entry> = {
  keygen: { run: nixKeygen, spec: NIX_KEYGEN_COMMAND },
  push: { run: nixPush, spec: NIX_PUSH_COMMAND },
}

/** `fleetmesh rollout <subcommand>`: rollouts in waves. */
const ROLLOUT_SUBCOMMANDS: Record<string, Entry> = {
  list: { run: rolloutList, spec: ROLLOUT_LIST_COMMAND },
  show: { run: rolloutShow, spec: ROLLOUT_SHOW_COMMAND },
  pause: { run: rolloutPause, spec: ROLLOUT_PAUSE_COMMAND },
  resume: { run: rolloutResume, spec: ROLLOUT_RESUME_COMMAND },
  abort: { run: rolloutAbort, spec: ROLLOUT_ABORT_COMMAND },
}

/** `fleetmesh coordinators <subcommand>`: the root-signed list of the fleet's coordinators. */
const COORDINATORS_SUBCOMMANDS: Record<string, Entry> = {
  add: { run: coordinatorsAdd, spec: COORDINATORS_ADD_COMMAND },
  list: { run: coordinatorsList, spec: COORDINATORS_LIST_COMMAND },
}

/** Commands that are groups of subcommands: `fleetmesh <group> <subcommand>`. */
const GROUPS: Record<string, Record<string, Entry>> = {
  admin: ADMIN_SUBCOMMANDS,
  coordinators: COORDINATORS_SUBCOMMANDS,
  nix: NIX_SUBCOMMANDS,
  rollout: ROLLOUT_SUBCOMMANDS,
}

/** Every admin command's spec, groups' subcommands included. */
export function adminSpecs(): CommandSpec[] {
  return [
    ...Object.values(COMMANDS).map((e) => e.spec),
    ...Object.values(GROUPS).flatMap((g) => Object.values(g).map((e) => e.spec)),
  ]
}

/** The words that may follow `fleetmesh` to reach an admin command (groups included). */
export function adminCommandNames(): string[] {
  return [...Object.keys(COMMANDS), ...Object.keys(GROUPS)]
}

/** Help rows: command and what it does. */
export function adminHelp(): [string, string][] {
  return adminSpecs().map((spec): [string, string] => [spec.name, listingLine(spec.summary)])
}

/** A summary as a row of the command listing: lower case, no final period, like the daemons' rows. */
function listingLine(summary: string): string {
  return `${summary.charAt(0).toLowerCase()}${summary.slice(1)}`.replace(/\.$/, '')
}

function groupHelp(group: string, subcommands: Record<string, Entry>): string {
  return [
    `usage: fleetmesh ${group} <${Object.keys(subcommands).join('|')}> [options]`,
    '',
    ...Object.values(subcommands).map((e) => `  ${e.spec.name.padEnd(16)} ${e.spec.summary}`),
    '',
    `"fleetmesh ${group} <subcommand> --help" describes a subcommand's options.`,
  ].join('\n')
}

/**
 * Runs `fleetmesh <command> …` and returns its exit code; undefined when it is no admin command.
 * `--help` anywhere in the arguments throws HelpRequested with the command's help.
 */
export async function runAdminCommand(
  command: string,
  argv: string[],
  home: string,
): Promise<number | undefined> {
  let entry = COMMANDS[command]
  let args = argv
  const group = GROUPS[command]
  if (group !== undefined) {
    const [sub, ...rest] = argv
    if (sub === '--help' || sub === '-h') throw new HelpRequested(groupHelp(command, group))
    entry = sub === undefined ? undefined : group[sub]
    if (entry === undefined)
      throw new UsageError(
        sub === undefined
          ? `name a ${command} command\n\n${groupHelp(command, group)}`
          : `unknown ${command} command '${sub}'${suggestion(sub, Object.keys(group))}\n\n${groupHelp(command, group)}`,
      )
    args = rest
  }
  if (entry === undefined) return undefined
  // Here rather than in the command's parser, so every command answers --help the same way before
  // any of its own checks run.
  if (wantsHelp(args)) throw new HelpRequested(formatHelp(entry.spec))
  const code = await entry.run(args, home)
  return typeof code === 'number' ? code : 0
}
