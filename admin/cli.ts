/**
 * The admin CLI's routing. `bin/main.ts` hands `fleetmesh <command>` here for
 * everything except the daemons; each command lives in its own file under
 * commands/ and returns an exit code, or nothing for success.
 */
import { UsageError } from '../lib/index.ts'
import { adminGrant, adminInstall, adminKeygen } from './commands/admin-keys.ts'
import { audit } from './commands/audit.ts'
import { deploy } from './commands/deploy.ts'
import { enroll } from './commands/enroll.ts'
import { init } from './commands/init.ts'
import { log } from './commands/log.ts'
import { machines } from './commands/machines.ts'
import { nixKeygen, nixPush } from './commands/nix.ts'
import { revoke } from './commands/revoke.ts'
import { watch } from './commands/watch.ts'

/** Resolves to an exit code, or to nothing for success. */
type Command = (argv: string[], home: string) => Promise<unknown>

interface Entry {
  run: Command
  help: string
}

const COMMANDS: Record<string, Entry> = {
  init: { run: init, help: 'create a fleet: root key, your admin certificate, the coordinator identity' },
  enroll: { run: enroll, help: 'issue a single-use enrollment token for a machine' },
  machines: { run: machines, help: 'list machines: tags, online, generations, state, last seen, path' },
  deploy: {
    run: deploy,
    help: 'upload an archive or push a NixOS closure (--nix, --nix-map), sign a manifest and roll it out; watches until settled',
  },
  watch: { run: watch, help: 'follow a rollout (or the whole fleet) live' },
  log: { run: log, help: "a machine's last update log: state, generation, error, pending reboot, output" },
  audit: { run: audit, help: 'list the audit log and verify its hash chain and signatures' },
}

/** `fleetmesh admin <subcommand>`. */
const ADMIN_SUBCOMMANDS: Record<string, Entry> = {
  keygen: { run: adminKeygen, help: "create this machine's admin key and print its public key" },
  grant: {
    run: adminGrant,
    help: 'issue an admin certificate (needs the root key or the "admin" capability)',
  },
  install: { run: adminInstall, help: 'install a certificate bundle produced by "admin grant"' },
  revoke: { run: revoke, help: 'revoke a certificate by serial' },
}

/** `fleetmesh nix <subcommand>`. */
const NIX_SUBCOMMANDS: Record<string, Entry> = {
  keygen: {
    run: nixKeygen,
    help: "create this admin's Nix binary cache signing key and print its public key",
  },
  push: {
    run: nixPush,
    help: "upload store paths' closures to the coordinator's Nix cache without deploying",
  },
}

/** Commands that are groups of subcommands: `fleetmesh <group> <subcommand>`. */
const GROUPS: Record<string, Record<string, Entry>> = { admin: ADMIN_SUBCOMMANDS, nix: NIX_SUBCOMMANDS }

/** Help rows: command and what it does. */
export function adminHelp(): [string, string][] {
  return [
    ...Object.entries(COMMANDS).map(([k, v]): [string, string] => [k, v.help]),
    ...Object.entries(GROUPS).flatMap(([group, subcommands]) =>
      Object.entries(subcommands).map(([k, v]): [string, string] => [`${group} ${k}`, v.help]),
    ),
  ]
}

/** Runs `fleetmesh <command> …` and returns its exit code; undefined when it is no admin command. */
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
    entry = sub === undefined ? undefined : group[sub]
    if (entry === undefined)
      throw new UsageError(
        `unknown ${command} command "${sub ?? ''}"; known: ${Object.keys(group).join(', ')}`,
      )
    args = rest
  }
  if (entry === undefined) return undefined
  const code = await entry.run(args, home)
  return typeof code === 'number' ? code : 0
}
